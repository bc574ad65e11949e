import json

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from curation.case_views import regression_overview
from ingestion.models import KnowledgeBase, Role
from ingestion.selectors import knowledge_base_get
from ragapp.audit import ACTIONS, AuditFilterForm, audit_csv_rows, audit_events, audit_record
from ragapp.dashboard import (
    PERCENTILES,
    Bar,
    bar_chart,
    dashboard_for,
    evaluation_rows,
    hbar_chart,
)
from ragapp.forms import SignUpForm
from ragapp.health import readiness_report


@require_GET
@never_cache
def healthz(request):
    """Liveness: this process answers. Touches nothing else, so it stays cheap to poll."""
    return JsonResponse({"status": "ok"})


def _may_see_health_details(request) -> bool:
    # Exception texts name hosts, versions and internals: staff or API clients only.
    if request.user.is_authenticated and request.user.is_staff:
        return True
    from ragapp.api.auth import RateLimited, bearer_user

    try:
        return bearer_user(request) is not None
    except RateLimited:
        return False


@require_GET
@never_cache
def readyz(request):
    """Readiness: database, pgvector, broker and workers (ragapp.health.READINESS_CHECKS)."""
    report = readiness_report()
    body = {"status": "ok" if report.ok else "error"}
    if _may_see_health_details(request):
        body["checks"] = {
            name: {"ok": result.ok, "detail": result.detail}
            for name, result in report.checks.items()
        }
        if report.failing:
            body["failing"] = report.failing
    return JsonResponse(body, status=200 if report.ok else 503)


@require_GET
@never_cache
def warmup_status(request):
    """This process's model warm-up (ragapp.warmup), for pages that wait on it: status,
    the model being loaded and seconds so far. No error texts: anyone may ask."""
    from ragapp.warmup import warm_state

    state = warm_state()
    return JsonResponse(
        {"status": state["status"], "loading": state["loading"], "seconds": state.get("seconds")}
    )


@login_required
def home(request):
    return redirect("kb_list")


def signup(request):
    if request.user.is_authenticated:
        return redirect("home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("kb_list")
    return render(request, "registration/signup.html", {"form": form})


def _dashboard_context(knowledge_bases, *, title: str, kb=None) -> dict:
    data = dashboard_for(knowledge_bases)
    stage_labels = {
        "condense": _("Condense"),
        "recall": _("Recall"),
        "rerank": _("Rerank"),
        "first_token": _("First token"),
        "total": _("Total"),
    }
    slowest = max((v[99] for v in data.latency.values()), default=0)
    latency = [
        {
            "stage": stage_labels.get(stage, stage),
            "values": values,
            "bars": hbar_chart(
                [Bar(f"p{q}", values[q], f"p{q}") for q in PERCENTILES],
                width=260,
                max_value=slowest,
            ),
        }
        for stage, values in data.latency.items()
    ]
    feedback = [
        Bar("👍", data.feedback_up, "up"),
        Bar("👎", data.feedback_down, "down"),
    ]
    evaluation = evaluation_rows(data.evaluation)
    mode_chart = hbar_chart(data.modes, width=260)
    evaluation_chart = hbar_chart(
        evaluation, width=260, max_value=max([1.0, *(b.value for b in evaluation)])
    )
    return {
        "title": title,
        "kb": kb,
        "is_owner": kb is not None,
        "d": data,
        "status_chart": bar_chart(data.documents_by_status, width=400, height=140),
        "days_chart": bar_chart(data.questions_per_day, width=600, height=140),
        "days_max": max((b.value for b in data.questions_per_day), default=0),
        "mode_chart": mode_chart,
        "mode_height": len(mode_chart) * 22,
        "feedback_chart": hbar_chart(feedback, width=260),
        "latency": latency,
        "evaluation_chart": evaluation_chart,
        "evaluation_height": len(evaluation_chart) * 22,
        "evaluation_other": {
            k: v
            for k, v in data.evaluation.items()
            if k != "results"
            and ("results" in data.evaluation or not isinstance(v, int | float | dict))
        },
    }


@login_required
def dashboard(request):
    """Staff see the whole site; anyone else the knowledge bases they own."""
    if request.user.is_staff:
        kbs = KnowledgeBase.objects.all()
        title = _("Site dashboard")
    else:
        kbs = KnowledgeBase.objects.owned_by(request.user)
        title = _("Dashboard of my knowledge bases")
    context = _dashboard_context(kbs, title=title)
    context["knowledge_bases"] = kbs
    context["editable_ids"] = _editable_ids(request.user)
    return render(request, "ragapp/dashboard.html", context)


def _editable_ids(user) -> set[int]:
    """Knowledge bases whose failed documents this user may retry (staff see others' too)."""
    return set(KnowledgeBase.objects.editable_by(user).values_list("pk", flat=True))


@login_required
def kb_dashboard(request, pk: int):
    """Owners manage their knowledge base's dashboard; staff may look at any, read-only
    (the site dashboard links every knowledge base here)."""
    if request.user.is_staff:
        kb = get_object_or_404(KnowledgeBase, pk=pk)
        is_owner = kb.role_of(request.user) == Role.OWNER
    else:
        kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
        is_owner = True
    context = _dashboard_context(
        KnowledgeBase.objects.filter(pk=kb.pk),
        title=_("Dashboard: %(name)s") % {"name": kb.name},
        kb=kb,
    )
    context["is_owner"] = is_owner
    context["editable_ids"] = _editable_ids(request.user)
    context["regression"] = regression_overview(knowledge_base=kb)
    return render(request, "ragapp/dashboard.html", context)


@login_required
def api_tokens(request):
    """Personal API tokens: create (shown once), list, revoke."""
    from django.http import HttpResponseBadRequest
    from django.utils import timezone

    from ragapp.models import ApiToken
    from ragapp.validation import parse_int, storable_text

    new_token = None
    if request.method == "POST":
        if request.POST.get("revoke"):
            token_id = parse_int(request.POST["revoke"])
            if token_id is None:
                return HttpResponseBadRequest(_("That is not a token id."))
            with transaction.atomic():
                token = ApiToken.objects.filter(
                    user=request.user, pk=token_id, revoked_at__isnull=True
                ).first()
                if token is not None:
                    token.revoked_at = timezone.now()
                    token.save(update_fields=["revoked_at"])
                    audit_record(request=request, action="token.revoke", obj=token)
            return redirect("api_tokens")
        name = storable_text(request.POST.get("name") or "").strip()
        with transaction.atomic():
            token, new_token = ApiToken.issue(request.user, name)
            audit_record(request=request, action="token.create", obj=token)
    tokens = ApiToken.objects.filter(user=request.user)
    return render(request, "ragapp/api_tokens.html", {"tokens": tokens, "new_token": new_token})


def _filtered_audit_events(request):
    """Staff only (anyone else gets a 404): the audit events the GET filters select."""
    if not request.user.is_staff:
        raise Http404
    form = AuditFilterForm(request.GET)
    form.is_valid()  # a filter that does not parse is left out of cleaned_data (and shown)
    filters = form.cleaned_data
    events = audit_events(
        action=filters.get("action") or "",
        user=(filters.get("user") or "").strip(),
        knowledge_base=filters.get("knowledge_base"),
        date_from=filters.get("date_from"),
        date_to=filters.get("date_to"),
    )
    return form, events


@login_required
@require_GET
def audit_log(request):
    form, events = _filtered_audit_events(request)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    for event in page:
        event.action_label = ACTIONS.get(event.action, event.action)
        event.details_text = json.dumps(event.details, ensure_ascii=False, default=str)
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "ragapp/audit.html",
        {"form": form, "page": page, "query": query.urlencode()},
    )


@login_required
@require_GET
def audit_export(request):
    """The audit events the filters select as CSV, streamed (the log can be long)."""
    _form, events = _filtered_audit_events(request)
    response = StreamingHttpResponse(
        audit_csv_rows(events.iterator(chunk_size=2000)), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
    return response


@login_required
@require_POST
def kb_qa_pairs(request, pk: int):
    """Import an owner's question -> document CSV and evaluate retrieval on it."""
    from django.contrib import messages

    from chat.abstention import calibrate_from_qa_pairs
    from retrieval.qa_eval import knowledge_base_evaluate, qa_pairs_import

    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    upload = request.FILES.get("csv")
    if upload is None or upload.size > 2 * 1024 * 1024:
        messages.error(request, _("Choose a CSV file of at most 2 MB."))
        return redirect("kb_dashboard", pk=kb.pk)
    text = upload.read().decode("utf-8", errors="replace")
    created, problems = qa_pairs_import(knowledge_base=kb, text=text, user=request.user)
    for problem in problems[:20]:
        messages.warning(request, problem)
    report = knowledge_base_evaluate(knowledge_base=kb)
    calibrate_from_qa_pairs(knowledge_base=kb)
    messages.success(
        request,
        _("%(created)d pairs imported; evaluated on %(pairs)d.")
        % {"created": created, "pairs": report["pairs"]},
    )
    return redirect("kb_dashboard", pk=kb.pk)
