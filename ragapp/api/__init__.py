"""The HTTP API under /api/v1/ (django-ninja; OpenAPI at /api/v1/openapi.json, docs at
/api/v1/docs). Every endpoint needs a personal token (Authorization: Bearer rag_...) and
sees exactly what its user may see; other users' objects are 404, never 403 (a member is
told 403 only on an owner-only endpoint of a knowledge base they can already see, and any
non-staff token on the staff-only /groups endpoints)."""

from __future__ import annotations

from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from ragapp.api.auth import RateLimited, TokenAuth
from ragapp.errors import request_limit_message

api = NinjaAPI(
    title="ragapp API",
    version="1",
    description="Knowledge bases, documents, search and chat over your documents.",
    auth=TokenAuth(),
    urls_namespace="api",
)


def error(request, status: int, code: str, message: str, **extra):
    response = api.create_response(
        request, {"error": {"code": code, "message": message, **extra}}, status=status
    )
    return response


@api.exception_handler(Http404)
def _not_found(request, exc):
    return error(request, 404, "not_found", "Not found.")


@api.exception_handler(PermissionDenied)
def _forbidden(request, exc):
    # Only for objects the user can see (a member on an owner-only endpoint); what they
    # cannot see stays 404, so nothing leaks that it exists.
    return error(request, 403, "forbidden", str(exc) or "You are not allowed to do this.")


@api.exception_handler(AuthenticationError)
def _unauthorized(request, exc):
    response = error(request, 401, "unauthorized", "A valid API token is required.")
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(ValidationError)
def _invalid(request, exc):
    return error(request, 422, "invalid", "The request is not valid.", details=exc.errors)


@api.exception_handler(RateLimited)
def _rate_limited(request, exc):
    response = error(request, 429, "rate_limited", "Too many requests for this token.")
    response["Retry-After"] = str(exc.retry_after)
    return response


@api.exception_handler(HttpError)
def _http_error(request, exc):
    codes = {
        400: "bad_request",
        403: "forbidden",
        404: "not_found",
        413: "too_large",
        415: "unsupported",
        409: "conflict",
        422: "invalid",
    }
    return error(request, exc.status_code, codes.get(exc.status_code, "error"), str(exc))


@api.exception_handler(SuspiciousOperation)
def _suspicious(request, exc):
    # Django raises these while reading the body (too big, too many files or fields); they
    # are the client's doing, not a server error.
    if isinstance(exc, RequestDataTooBig | TooManyFilesSent | TooManyFieldsSent):
        return error(request, 413, "too_large", request_limit_message(exc))
    return error(request, 400, "bad_request", "The request is not valid.")


@api.exception_handler(Exception)
def _server_error(request, exc):
    import logging

    logging.getLogger(__name__).exception("API error")
    return error(request, 500, "server_error", "Something went wrong on our side.")


from ragapp.api import (  # noqa: E402
    cases,
    chat,
    chunks,
    faqs,
    gaps,
    groups,
    knowledge,
    search,
    share_links,
)

api.add_router("/", knowledge.router)
api.add_router("/", chunks.router)
api.add_router("/", search.router)
api.add_router("/", chat.router)
api.add_router("/", groups.router)
api.add_router("/", faqs.router)
api.add_router("/", gaps.router)
api.add_router("/", cases.router)
api.add_router("/", share_links.router)
