"""Share links: an assistant published over some of an owner's knowledge bases, answered for
people who may have no account (a full page at /s/<token>/ and an embeddable widget).

What a visitor can reach is decided here and nowhere else:
- only the link's knowledge bases that its owner still owns (a knowledge base handed to
  someone else, or deleted, drops out of the link at once);
- an anonymous visitor asks as `AnonymousUser`, which `ingestion.scope` limits to
  unrestricted documents (`user=None` would mean "the system" and see everything);
- a visitor of a login-required link asks as themselves, still only over the link's
  knowledge bases;
- a revoked link answers 404 from its next request on.

Conversations of a link carry `share_link` and the visitor's id; an anonymous visitor's have
no user, so they never appear in anybody's chat list, while the knowledge base's dashboard
and gaps (which read conversations by knowledge base) count them like any other."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.db import transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext as _

from chat.models import Conversation
from chat.services import ChatEvent, answer_question
from curation.models import ShareLink
from ingestion.models import KnowledgeBase
from ragapp.ratelimit import count_hit

VISITOR_SALT = "curation.sharing.visitor"
# The widget's conversation survives a day in the page; a reload mints a new token.
VISITOR_TOKEN_MAX_AGE = 24 * 3600
TITLE_LENGTH = ShareLink._meta.get_field("title").max_length
QUESTION_LENGTH = 300
WELCOME_LENGTH = 2000
# Source fields a visitor sees: what the passage says and where it is, but no links into
# the app (they need an account) and no database ids.
VISITOR_SOURCE_FIELDS = (
    "n",
    "kind",
    "question",
    "document",
    "page",
    "heading",
    "sheet",
    "slide",
    "text",
    "cited",
)
# scheme://host[:port], host names only (a "*." wildcard first, as CSP allows): the value goes
# into a header, so nothing that could end the directive (";", ",", spaces) passes.
_ORIGIN = re.compile(r"^https?://(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*(:\d{1,5})?$")


class ShareLinkInvalid(ValueError):
    """A share link's settings that cannot be used; the message is user-facing."""


class ShareRateLimited(Exception):
    def __init__(self, retry_after: int):
        super().__init__(_("Too many questions. Please try again later."))
        self.retry_after = retry_after


@dataclass(frozen=True)
class Visitor:
    """Who asks through a link: `id` names them in their conversations (a random id kept in
    a signed cookie or token), `user` is the account or AnonymousUser, `ip` the client's
    address (None over a unix socket)."""

    id: str
    user: object
    ip: str | None = None


# ---- owners ------------------------------------------------------------------------------


def clean_origins(origins: Sequence[str]) -> list[str]:
    """`scheme://host[:port]` each, lower-cased, without a path; ShareLinkInvalid otherwise.
    They become the widget's CSP frame-ancestors, so nothing but an origin may pass."""
    out: list[str] = []
    for raw in origins:
        origin = (raw or "").strip().rstrip("/").lower()
        if not origin:
            continue
        if not _ORIGIN.match(origin) or not _port_ok(origin):
            raise ShareLinkInvalid(
                _("%(origin)s is not an origin like https://www.example.com") % {"origin": raw}
            )
        if origin not in out:
            out.append(origin)
    return out


def _port_ok(origin: str) -> bool:
    try:
        urlsplit(origin).port  # noqa: B018 - raises ValueError past 65535
    except ValueError:
        return False
    return True


def clean_questions(questions: Sequence[str]) -> list[str]:
    out = [q.strip()[:QUESTION_LENGTH] for q in questions if q and q.strip()]
    return out[: settings.RAG_SHARE_MAX_SUGGESTED_QUESTIONS]


def share_link_create(
    *,
    owner,
    knowledge_bases: Sequence[KnowledgeBase],
    title: str,
    login_required: bool = False,
    welcome_message: str = "",
    suggested_questions: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
    rate_limit_per_hour: int | None = None,
) -> ShareLink:
    """Publish an assistant over knowledge bases that `owner` owns (ShareLinkInvalid if one
    is not theirs: a member must not publish what the owners keep to members)."""
    kbs = list({kb.pk: kb for kb in knowledge_bases}.values())
    if not kbs:
        raise ShareLinkInvalid(_("Choose at least one knowledge base."))
    owned = set(
        KnowledgeBase.objects.owned_by(owner)
        .filter(pk__in=[kb.pk for kb in kbs])
        .values_list("pk", flat=True)
    )
    if owned != {kb.pk for kb in kbs}:
        raise ShareLinkInvalid(_("You can only share knowledge bases that you own."))
    title = (title or "").replace("\x00", "").strip()
    if not title:
        raise ShareLinkInvalid(_("A title is required."))
    if rate_limit_per_hour is None:
        rate_limit_per_hour = settings.RAG_SHARE_RATE_LIMIT_PER_HOUR
    if rate_limit_per_hour < 0:
        raise ShareLinkInvalid(_("The rate limit cannot be negative."))
    with transaction.atomic():
        link = ShareLink.objects.create(
            owner=owner,
            token=secrets.token_urlsafe(24),
            title=title[:TITLE_LENGTH],
            welcome_message=(welcome_message or "").replace("\x00", "").strip()[:WELCOME_LENGTH],
            suggested_questions=clean_questions(suggested_questions),
            login_required=bool(login_required),
            allowed_origins=clean_origins(allowed_origins),
            rate_limit_per_hour=rate_limit_per_hour,
        )
        link.knowledge_bases.set(kbs)
    return link


def share_link_revoke(*, share_link: ShareLink) -> ShareLink:
    """Stop the link from its next request on; its conversations stay (dashboards, gaps)."""
    if share_link.revoked_at is None:
        share_link.revoked_at = timezone.now()
        share_link.save(update_fields=["revoked_at"])
    return share_link


def share_links_for(*, knowledge_base: KnowledgeBase):
    """The links that publish this knowledge base (alone or with others), newest first."""
    return (
        ShareLink.objects.filter(knowledge_bases=knowledge_base)
        .prefetch_related("knowledge_bases")
        .distinct()
    )


def share_link_manageable(*, user, pk) -> ShareLink:
    """A link `user` may revoke: theirs, or one over a knowledge base they own. 404 otherwise
    (also for another owner's link: nothing says that it exists)."""
    owned = KnowledgeBase.objects.owned_by(user).values("pk")
    try:
        return (
            ShareLink.objects.filter(Q(owner=user) | Q(knowledge_bases__in=owned))
            .distinct()
            .get(pk=pk)
        )
    except (ShareLink.DoesNotExist, ValueError, TypeError):
        raise Http404("No such share link.") from None


# ---- visitors ----------------------------------------------------------------------------


def share_link_get_active(*, token: str) -> ShareLink:
    """The link behind a public URL; 404 for an unknown or revoked one, and for one left
    with no knowledge base to answer from (all deleted or no longer its creator's)."""
    try:
        link = ShareLink.objects.select_related("owner").get(token=token, revoked_at__isnull=True)
    except ShareLink.DoesNotExist:
        raise Http404("No such share link.") from None
    if not share_link_knowledge_bases(link):
        raise Http404("No such share link.")
    return link


def share_link_knowledge_bases(share_link: ShareLink) -> list[KnowledgeBase]:
    """What the link may answer from: its knowledge bases that its owner still owns."""
    return list(
        share_link.knowledge_bases.filter(
            pk__in=KnowledgeBase.objects.owned_by(share_link.owner).values("pk")
        ).order_by("pk")
    )


def new_visitor_id() -> str:
    return uuid.uuid4().hex


def visitor_token(*, share_link: ShareLink, visitor_id: str) -> str:
    """The visitor's id, signed for this link: the page sends it with every question, so the
    widget works in a third-party frame where the browser keeps no cookies of ours."""
    return signing.dumps({"v": visitor_id, "l": share_link.pk}, salt=VISITOR_SALT, compress=False)


def visitor_from_token(*, share_link: ShareLink, token: str) -> str | None:
    try:
        data = signing.loads(token or "", salt=VISITOR_SALT, max_age=VISITOR_TOKEN_MAX_AGE)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("l") != share_link.pk:
        return None
    visitor = data.get("v")
    return visitor if isinstance(visitor, str) and visitor else None


def share_rate_check(*, share_link: ShareLink, visitor: Visitor) -> None:
    """Count one question; ShareRateLimited past the link's hourly limit per visitor (their
    account, else their id), or RAG_SHARE_IP_FACTOR times it per client address: a visitor
    id is free to make, so the address is the limit that a script cannot reset."""
    limit = share_link.rate_limit_per_hour
    if not limit:
        return
    if getattr(visitor.user, "is_authenticated", False):
        who = f"u{visitor.user.pk}"
    else:
        who = f"v{visitor.id}"
    counts = [
        (count_hit(f"share:{share_link.pk}:{who}", timeout=3600), limit),
    ]
    if visitor.ip:
        factor = max(settings.RAG_SHARE_IP_FACTOR, 1)
        counts.append(
            (count_hit(f"share:{share_link.pk}:ip:{visitor.ip}", timeout=3600), limit * factor)
        )
    if any(count > allowed for count, allowed in counts):
        raise ShareRateLimited(retry_after=3600)


def share_conversation_get(*, share_link: ShareLink, visitor: Visitor, pk) -> Conversation:
    """The visitor's own conversation on this link, or 404."""
    try:
        return _visitor_conversations(share_link, visitor).get(pk=pk)
    except (Conversation.DoesNotExist, ValueError, TypeError):
        raise Http404("No such conversation.") from None


def _visitor_conversations(share_link: ShareLink, visitor: Visitor):
    """The conversations of this visitor on this link: theirs as an account on a
    login-required link, else theirs as an anonymous visitor (their id, no user)."""
    if getattr(visitor.user, "is_authenticated", False):
        mine = Q(user=visitor.user)
    else:
        mine = Q(user__isnull=True)
    return Conversation.objects.filter(mine, share_link=share_link, visitor=visitor.id)


def share_feedback(*, share_link: ShareLink, visitor: Visitor, message_pk, rating: int):
    """A visitor's 👍 (1) or 👎 (-1) on an answer of their own conversation on this link
    (404 for any other message); a second rating of the same answer replaces the first.
    It counts on the dashboard and marks knowledge gaps like an account's, but never trains
    the knowledge base's reranker (chat.selectors.feedback_for_training): the public must
    not be able to steer every member's ranking."""
    from chat.models import Feedback, Message

    if rating not in (1, -1):
        raise ValueError("rating must be 1 or -1")
    if getattr(visitor.user, "is_authenticated", False):
        who = {"user": visitor.user}
    else:
        who = {"user": None, "visitor": visitor.id}
    answers = Message.objects.filter(
        conversation__in=_visitor_conversations(share_link, visitor), role=Message.Role.ASSISTANT
    )
    try:
        message = answers.get(pk=message_pk)
    except (Message.DoesNotExist, ValueError, TypeError):
        raise Http404("No such answer.") from None
    feedback, _created = Feedback.objects.update_or_create(
        message=message, **who, defaults={"rating": rating, "visitor": visitor.id}
    )
    return feedback


def share_ask(
    *,
    share_link: ShareLink,
    visitor: Visitor,
    question: str,
    conversation: Conversation | None = None,
) -> Iterator[ChatEvent]:
    """Answer a visitor's question over the link's knowledge bases: the chat pipeline, with
    sources reduced to what a visitor may see. `conversation` must be the visitor's own
    (share_conversation_get); a new one is created otherwise."""
    kbs = share_link_knowledge_bases(share_link)
    if not kbs:
        raise Http404("No such share link.")
    user = visitor.user if getattr(visitor.user, "is_authenticated", False) else AnonymousUser()
    question = question.replace("\x00", "")
    if conversation is None:
        conversation = Conversation.objects.create(
            user=user if user.is_authenticated else None,
            share_link=share_link,
            visitor=visitor.id,
            title=question.strip()[:120],
        )
        conversation.knowledge_bases.set(kbs)
    events = answer_question(
        user=user, knowledge_bases=kbs, question=question, conversation=conversation
    )
    return _for_visitor(events)


def visitor_sources(sources) -> list[dict]:
    return [
        {key: s[key] for key in VISITOR_SOURCE_FIELDS if key in s}
        for s in (sources or [])
        if isinstance(s, dict)
    ]


def _for_visitor(events: Iterator[ChatEvent]) -> Iterator[ChatEvent]:
    """The pipeline's events without links into the app or database ids in the sources, and
    without the abstention's internals; the answer's own id stays on "done" (feedback only
    accepts it from the visitor whose conversation holds it). Closing this closes the
    pipeline (client gone)."""
    try:
        for event in events:
            data = dict(event.data)
            if "sources" in data:
                data["sources"] = visitor_sources(data["sources"])
            for internal in ("abstention", "timings_ms"):
                data.pop(internal, None)
            if event.type != "done":  # the answer's id: what the visitor's 👍/👎 names
                data.pop("message_id", None)
            yield ChatEvent(event.type, data)
    finally:
        events.close()
