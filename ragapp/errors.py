"""Error responses for requests Django refuses while reading them.

A body over DATA_UPLOAD_MAX_MEMORY_SIZE, more files than DATA_UPLOAD_MAX_NUMBER_FILES or
more fields than DATA_UPLOAD_MAX_NUMBER_FIELDS raise SuspiciousOperation subclasses that
Django answers with a bare 400. They are the client's doing and mean "too large": 413, as
JSON for the APIs and for the upload portal's scripts, as a page otherwise."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.defaults import bad_request as default_bad_request

TOO_LARGE = (RequestDataTooBig, TooManyFilesSent, TooManyFieldsSent)


def request_limit_message(exc: Exception) -> str:
    if isinstance(exc, TooManyFilesSent):
        return _("Too many files at once (at most %(n)d).") % {
            "n": settings.DATA_UPLOAD_MAX_NUMBER_FILES
        }
    if isinstance(exc, TooManyFieldsSent):
        return _("Too many form fields (at most %(n)d).") % {
            "n": settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        }
    return _("The request is too large (at most %(mb)s MB besides uploaded files).") % {
        "mb": f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 1024 / 1024:.0f}"
    }


def _wants_json(request) -> bool:
    path = request.path_info
    return (
        path.startswith(("/api/", "/v1/"))
        or request.headers.get("x-requested-with") == "XMLHttpRequest"
        or "application/json" in request.headers.get("accept", "")
    )


def bad_request(request, exception=None, template_name="400.html"):
    """handler400: the request limits become 413, anything else keeps Django's 400."""
    if not isinstance(exception, TOO_LARGE):
        return default_bad_request(request, exception, template_name=template_name)
    message = request_limit_message(exception)
    if not _wants_json(request):
        return render(request, "413.html", {"message": message}, status=413)
    if request.path_info.startswith("/v1/"):
        body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    elif request.path_info.startswith("/api/"):
        body = {"error": {"code": "too_large", "message": message}}
    else:  # the upload portal shows `refused` to the user
        body = {"accepted": [], "refused": [{"name": "", "error": message}], "error": message}
    return JsonResponse(body, status=413)
