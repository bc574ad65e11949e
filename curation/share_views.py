"""Share links: the owners' page (create, list, revoke, the snippet to copy) and the public
pages of a link: the full-page chat, the widget for other sites' iframes, its script and the
streaming ask endpoint. Thin: the rules are in curation.sharing. (URL patterns at the bottom.)"""

from __future__ import annotations

import functools
import re
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.views import redirect_to_login
from django.contrib.staticfiles import finders
from django.db import transaction
from django.http import Http404, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.html import escape
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from chat.views import sse_response
from curation.audit import audit_share_link_create, audit_share_link_revoke
from curation.sharing import (
    VISITOR_SALT,
    ShareLinkInvalid,
    ShareRateLimited,
    Visitor,
    new_visitor_id,
    share_ask,
    share_conversation_get,
    share_feedback,
    share_link_create,
    share_link_get_active,
    share_link_manageable,
    share_link_revoke,
    share_links_for,
    share_rate_check,
    visitor_from_token,
    visitor_token,
)
from ingestion.models import KnowledgeBase
from ingestion.selectors import knowledge_base_get
from ragapp.client_ip import client_ip
from ragapp.validation import parse_int, text_problem

VISITOR_COOKIE = "rag_visitor"
MAX_QUESTION = 4000


def share_urls(request, link) -> dict[str, str]:
    """The absolute URLs of a link and the snippets that embed it."""
    page = request.build_absolute_uri(reverse("share_page", args=[link.token]))
    widget = request.build_absolute_uri(reverse("share_widget", args=[link.token]))
    script = request.build_absolute_uri(reverse("share_embed_js", args=[link.token]))
    return {
        "url": page,
        "widget": widget,
        "script_snippet": f'<script src="{script}" async></script>',
        "iframe_snippet": (
            f'<iframe src="{widget}" title="{escape(link.title)}" width="400" height="600" '
            'style="border:0"></iframe>'
        ),
    }


def _lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


# ---- owners ------------------------------------------------------------------------------


@login_required
def kb_share_links(request, pk: int):
    """GET: the knowledge base's share links; POST: publish a new one."""
    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    others = KnowledgeBase.objects.owned_by(request.user).exclude(pk=kb.pk).order_by("name")
    status = 200
    if request.method == "POST":
        extra_ids = {i for i in map(parse_int, request.POST.getlist("knowledge_bases")) if i}
        rate = parse_int(request.POST.get("rate_limit_per_hour"))
        try:
            with transaction.atomic():
                link = share_link_create(
                    owner=request.user,
                    knowledge_bases=[kb, *others.filter(pk__in=extra_ids)],
                    title=request.POST.get("title", ""),
                    login_required=request.POST.get("login_required") == "on",
                    welcome_message=request.POST.get("welcome_message", ""),
                    suggested_questions=_lines(request.POST.get("suggested_questions")),
                    allowed_origins=_lines(request.POST.get("allowed_origins")),
                    rate_limit_per_hour=rate,
                )
                audit_share_link_create(request=request, link=link, knowledge_base=kb)
        except ShareLinkInvalid as exc:
            messages.error(request, str(exc))
            status = 400
        else:
            messages.success(request, _("Share link created: %(url)s") % share_urls(request, link))
            return redirect("kb_share_links", pk=kb.pk)
    links = [(link, share_urls(request, link)) for link in share_links_for(knowledge_base=kb)]
    return render(
        request,
        "curation/share_links.html",
        {
            "kb": kb,
            "is_owner": True,
            "links": links,
            "others": others,
            "form": request.POST if status == 400 else {},
            "default_rate": settings.RAG_SHARE_RATE_LIMIT_PER_HOUR,
        },
        status=status,
    )


@login_required
@require_POST
def kb_share_link_revoke(request, pk: int, link_pk: int):
    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    link = share_link_manageable(user=request.user, pk=link_pk)
    if link.revoked_at is None:
        with transaction.atomic():
            share_link_revoke(share_link=link)
            audit_share_link_revoke(request=request, link=link, knowledge_base=kb)
    messages.success(request, _("The link %(title)s no longer works.") % {"title": link.title})
    return redirect("kb_share_links", pk=kb.pk)


# ---- visitors ----------------------------------------------------------------------------


def _visitor_id(request) -> tuple[str, bool]:
    """The visitor's id from their signed cookie, or a new one (True: set the cookie)."""
    visitor = request.get_signed_cookie(
        VISITOR_COOKIE,
        default=None,
        salt=VISITOR_SALT,
        max_age=settings.RAG_SHARE_VISITOR_DAYS * 86400,
    )
    if visitor and re.fullmatch(r"[0-9a-f]{32}", visitor):
        return visitor, False
    return new_visitor_id(), True


def _chat_page(request, link, *, embedded: bool) -> HttpResponse:
    visitor, fresh = _visitor_id(request)
    needs_login = link.login_required and not request.user.is_authenticated
    response = render(
        request,
        "curation/share_chat.html",
        {
            "link": link,
            "embedded": embedded,
            "needs_login": needs_login,
            "visitor_token": visitor_token(share_link=link, visitor_id=visitor),
            "page_url": reverse("share_page", args=[link.token]),
            "ask_url": reverse("share_ask", args=[link.token]),
            "feedback_url": reverse("share_feedback", args=[link.token]),
        },
    )
    if fresh:
        response.set_signed_cookie(
            VISITOR_COOKIE,
            visitor,
            salt=VISITOR_SALT,
            max_age=settings.RAG_SHARE_VISITOR_DAYS * 86400,
            path="/s/",
            httponly=True,
            samesite="Lax",
            secure=request.is_secure(),
        )
    return response


def frame_ancestors_policy(link) -> str:
    """The site's Content-Security-Policy with frame-ancestors widened to the link's allowed
    origins: only the widget may be framed, and only by those sites."""
    ancestors = " ".join(["frame-ancestors 'self'", *link.allowed_origins])
    directives = [
        d.strip()
        for d in (settings.RAG_CONTENT_SECURITY_POLICY or "").split(";")
        if d.strip() and not d.strip().lower().startswith("frame-ancestors")
    ]
    return "; ".join([*directives, ancestors])


@never_cache
def share_page(request, token: str):
    """The full-page chat of a link."""
    link = share_link_get_active(token=token)
    if link.login_required and not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    return _chat_page(request, link, embedded=False)


@never_cache
@xframe_options_exempt
def share_widget(request, token: str):
    """The chat for another site's iframe: framable by the link's allowed origins only. A
    login-required link shows a link to the full page instead (the login page itself is
    never framed)."""
    link = share_link_get_active(token=token)
    response = _chat_page(request, link, embedded=True)
    response["Content-Security-Policy"] = frame_ancestors_policy(link)
    return response


@functools.cache
def _embed_script() -> str:
    found = finders.find("js/embed.js")
    if not found:
        raise Http404("embed.js is missing")
    with open(found, encoding="utf-8") as fh:
        return fh.read()


@never_cache
def share_embed_js(request, token: str):
    """The script another site includes: it adds a chat bubble that opens the widget."""
    share_link_get_active(token=token)
    return HttpResponse(_embed_script(), content_type="text/javascript; charset=utf-8")


def _same_origin(request) -> bool:
    """A browser's POST says where it comes from: only our own pages (the full page and the
    widget, which is same-origin with us inside its frame) may ask."""
    origin = request.META.get("HTTP_ORIGIN")
    if not origin:
        return True  # not a browser, so not a forged cross-site request
    # The host, not the scheme: behind a proxy that terminates TLS the scheme we see may
    # differ from the browser's.
    return urlsplit(origin).netloc == request.get_host() or origin in settings.CSRF_TRUSTED_ORIGINS


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@csrf_exempt  # checked below: the CSRF token for accounts, the Origin for anonymous visitors
@never_cache
@require_POST
def share_ask_view(request, token: str):
    """POST question, visitor (the page's signed token), conversation (optional) ->
    text/event-stream, as the chat's ask; 429 with a message past the rate limit.

    An anonymous visitor has no session to forge requests with, and a widget in a
    third-party frame gets no cookies (SameSite), hence no CSRF cookie: the signed visitor
    token and the Origin check stand in for it. A login-required link asks as the account,
    so the usual CSRF check applies."""
    link = share_link_get_active(token=token)
    visitor = _visitor_of(request, link)
    if isinstance(visitor, HttpResponse):
        return visitor
    question = (request.POST.get("question") or "").strip()
    if not question:
        return HttpResponseBadRequest("question is required")
    if len(question) > MAX_QUESTION:
        return HttpResponseBadRequest("question is too long (4000 characters at most)")
    if text_problem(question):
        return HttpResponseBadRequest(f"question {text_problem(question)}")
    conversation = None
    if request.POST.get("conversation"):
        conversation = share_conversation_get(
            share_link=link, visitor=visitor, pk=parse_int(request.POST["conversation"])
        )
    try:
        share_rate_check(share_link=link, visitor=visitor)
    except ShareRateLimited as exc:
        response = _error(str(exc), 429)
        response["Retry-After"] = str(exc.retry_after)
        return response
    return sse_response(
        share_ask(share_link=link, visitor=visitor, question=question, conversation=conversation)
    )


def _visitor_of(request, link) -> Visitor | JsonResponse:
    """Who posts to a link's endpoint, checked as share_ask_view explains; a JsonResponse
    when refused."""
    if link.login_required:
        if not request.user.is_authenticated:
            return _error(_("Please log in to ask questions here."), 401)
        rejected = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
        if rejected is not None:
            return rejected
        user = request.user
    else:
        if not _same_origin(request):
            return _error("cross-origin request refused", 403)
        user = AnonymousUser()
    visitor_id = visitor_from_token(share_link=link, token=request.POST.get("visitor", ""))
    if visitor_id is None:
        return _error(_("This page has expired. Please reload it."), 400)
    return Visitor(id=visitor_id, user=user, ip=client_ip(request))


@csrf_exempt  # checked in _visitor_of, as for asking
@never_cache
@require_POST
def share_feedback_view(request, token: str):
    """POST visitor, message, rating (1 or -1) -> {"ok": true, "rating": r}: a visitor's
    👍/👎 on one of their answers; 404 for any other message."""
    link = share_link_get_active(token=token)
    visitor = _visitor_of(request, link)
    if isinstance(visitor, HttpResponse):
        return visitor
    rating = {"1": 1, "-1": -1}.get((request.POST.get("rating") or "").strip())
    if rating is None:
        return _error("rating must be 1 or -1", 400)
    message = parse_int(request.POST.get("message"))
    share_feedback(share_link=link, visitor=visitor, message_pk=message, rating=rating)
    return JsonResponse({"ok": True, "rating": rating})


urlpatterns = [
    path("kb/<int:pk>/share/", kb_share_links, name="kb_share_links"),
    path(
        "kb/<int:pk>/share/<int:link_pk>/revoke",
        kb_share_link_revoke,
        name="kb_share_link_revoke",
    ),
    path("s/<str:token>/", share_page, name="share_page"),
    path("s/<str:token>/widget", share_widget, name="share_widget"),
    path("s/<str:token>/embed.js", share_embed_js, name="share_embed_js"),
    path("s/<str:token>/ask", share_ask_view, name="share_ask"),
    path("s/<str:token>/feedback", share_feedback_view, name="share_feedback"),
]
