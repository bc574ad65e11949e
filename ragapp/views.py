from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from ragapp.health import health_report


@require_GET
@never_cache
def healthz(request):
    healthy, parts = health_report()
    failing = [name for name, part in parts.items() if not part["ok"]]
    body = {"status": "ok" if healthy else "error", "checks": parts}
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=200 if healthy else 503)


@login_required
def home(request):
    return redirect("kb_list")
