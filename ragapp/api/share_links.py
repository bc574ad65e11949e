"""/api/v1 endpoints: share links (an assistant published over knowledge bases you own)."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.urls import reverse
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError

from curation.audit import audit_share_link_create, audit_share_link_revoke
from curation.sharing import (
    ShareLinkInvalid,
    share_link_create,
    share_link_manageable,
    share_link_revoke,
    share_links_for,
)
from ingestion.models import KnowledgeBase
from ingestion.selectors import knowledge_base_get
from ragapp.api.schemas import Text

router = Router(tags=["share links"])


class ShareLinkIn(Schema):
    title: Text = Field(..., min_length=1, max_length=200)
    login_required: bool = False
    welcome_message: Text = Field("", max_length=2000)
    suggested_questions: list[Text] = Field(default_factory=list, max_length=20)
    allowed_origins: list[Text] = Field(default_factory=list, max_length=50)
    rate_limit_per_hour: int | None = Field(None, ge=0, le=1_000_000)
    # More knowledge bases (that you own) to answer from, besides the one in the path.
    knowledge_base_ids: list[int] = Field(default_factory=list, max_length=100)


class ShareLinkCreated(Schema):
    id: int
    url: str


class ShareLinkOut(Schema):
    id: int
    url: str
    embed_url: str
    title: str
    welcome_message: str
    suggested_questions: list[str]
    login_required: bool
    allowed_origins: list[str]
    rate_limit_per_hour: int
    knowledge_bases: list[int]
    created_at: datetime
    revoked_at: datetime | None


def _url(request, name: str, link) -> str:
    return request.build_absolute_uri(reverse(name, args=[link.token]))


def link_out(request, link) -> dict:
    return {
        "id": link.pk,
        "url": _url(request, "share_page", link),
        "embed_url": _url(request, "share_embed_js", link),
        "title": link.title,
        "welcome_message": link.welcome_message,
        "suggested_questions": link.suggested_questions,
        "login_required": link.login_required,
        "allowed_origins": link.allowed_origins,
        "rate_limit_per_hour": link.rate_limit_per_hour,
        "knowledge_bases": sorted(kb.pk for kb in link.knowledge_bases.all()),
        "created_at": link.created_at,
        "revoked_at": link.revoked_at,
    }


@router.post("/knowledge-bases/{int:kb_id}/share-links", response={201: ShareLinkCreated})
def share_link_new(request, kb_id: int, payload: ShareLinkIn):
    """Publish an assistant over this knowledge base (and `knowledge_base_ids`, all yours):
    `url` is its full-page chat; `<url>embed.js` adds it to another site."""
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    extra_ids = set(payload.knowledge_base_ids) - {kb.pk}
    extra = list(KnowledgeBase.objects.owned_by(request.user).filter(pk__in=extra_ids))
    if len(extra) != len(extra_ids):
        raise HttpError(404, "Not found.")
    try:
        with transaction.atomic():
            link = share_link_create(
                owner=request.user,
                knowledge_bases=[kb, *extra],
                title=payload.title,
                login_required=payload.login_required,
                welcome_message=payload.welcome_message,
                suggested_questions=payload.suggested_questions,
                allowed_origins=payload.allowed_origins,
                rate_limit_per_hour=payload.rate_limit_per_hour,
            )
            audit_share_link_create(request=request, link=link, knowledge_base=kb)
    except ShareLinkInvalid as exc:
        raise HttpError(400, str(exc)) from None
    return Status(201, {"id": link.pk, "url": _url(request, "share_page", link)})


@router.get("/knowledge-bases/{int:kb_id}/share-links", response=list[ShareLinkOut])
def share_link_list(request, kb_id: int):
    """The links that publish this knowledge base, revoked ones included (newest first)."""
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    return [link_out(request, link) for link in share_links_for(knowledge_base=kb)]


@router.delete("/share-links/{int:link_id}", response={204: None})
def share_link_delete(request, link_id: int):
    """Revoke: the link stops at once; its conversations are kept."""
    link = share_link_manageable(user=request.user, pk=link_id)
    if link.revoked_at is None:
        with transaction.atomic():
            share_link_revoke(share_link=link)
            audit_share_link_revoke(request=request, link=link)
    return Status(204, None)
