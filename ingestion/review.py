"""Review of contributions: when a knowledge base requires review, documents uploaded by its
contributors wait (ReviewStatus.PENDING, not indexed) until an editor or owner approves them.

Only pending documents can be reviewed. Approving queues the document for ingestion; until
then it has no chunks, so recall cannot return it (ingestion.scope also keeps recall to
approved documents). Rejecting keeps the document, unindexed, with the reviewer's reason for
its uploader to read; an editor or owner may delete it. An approved document is never
"un-approved": an editor who no longer wants it deletes it.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from ingestion.models import Document, KnowledgeBase, ReviewStatus, Role
from ingestion.selectors import visible_documents
from ingestion.services import document_enqueue
from ragapp.validation import storable_text

REASON_MAX_LENGTH = 2000


class ReviewError(ValueError):
    """A review that cannot be done: the document is not pending; message is user-facing."""


class InvalidReason(ReviewError):
    """A rejection without a reason, or with one too long."""


def can_review(*, knowledge_base: KnowledgeBase, user) -> bool:
    return knowledge_base.role_of(user) in (Role.OWNER, Role.EDITOR)


def pending_documents(*, knowledge_base: KnowledgeBase, reviewer):
    """The review queue that `reviewer` may act on (a document restricted to others stays
    hidden, as everywhere), oldest first: first come, first reviewed."""
    return (
        visible_documents(user=reviewer, write=True)
        .filter(knowledge_base=knowledge_base, review_status=ReviewStatus.PENDING)
        .select_related("uploaded_by")
        .order_by("created_at", "id")
    )


def _lock_pending(document: Document) -> Document:
    # Locked: two reviewers clicking at once review it once, and the second is told so.
    locked = Document.objects.select_for_update().get(pk=document.pk)
    if locked.review_status != ReviewStatus.PENDING:
        raise ReviewError(_("This document is not waiting for review."))
    return locked


def _decide(document: Document, *, reviewer, status: str, reason: str = "") -> Document:
    """Record a reviewer's decision on a pending document (locked); approval also queues it
    for ingestion (sent when the transaction commits)."""
    with transaction.atomic():
        locked = _lock_pending(document)
        locked.review_status = status
        locked.review_reason = reason
        locked.reviewed_by = reviewer
        locked.reviewed_at = timezone.now()
        locked.save(
            update_fields=[
                "review_status",
                "review_reason",
                "reviewed_by",
                "reviewed_at",
                "updated_at",
            ]
        )
        if status == ReviewStatus.APPROVED:
            document_enqueue(document=locked, force=True)
    locked.refresh_from_db()
    return locked


def document_approve(*, document: Document, reviewer) -> Document:
    """Approve a pending document and queue it for ingestion (sent when the transaction
    commits)."""
    return _decide(document, reviewer=reviewer, status=ReviewStatus.APPROVED)


def document_reject(*, document: Document, reviewer, reason: str) -> Document:
    """Reject a pending document with the reviewer's reason (required); nothing is indexed."""
    reason = storable_text(reason or "").strip()
    if not reason:
        raise InvalidReason(_("Give a reason for rejecting the document."))
    if len(reason) > REASON_MAX_LENGTH:
        raise InvalidReason(
            _("The reason is too long (at most %(n)d characters).") % {"n": REASON_MAX_LENGTH}
        )
    return _decide(document, reviewer=reviewer, status=ReviewStatus.REJECTED, reason=reason)
