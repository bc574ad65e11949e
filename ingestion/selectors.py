"""Reads of knowledge, always scoped by what the user may see."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404
from django.utils.translation import gettext as _

from ingestion.models import Chunk, Document, DocumentStatus, KnowledgeBase, ReviewStatus


def knowledge_bases_for(*, user, write: bool = False):
    qs = KnowledgeBase.objects.all()
    return qs.editable_by(user) if write else qs.readable_by(user)


def knowledge_base_get(
    *, user, pk: int, write: bool = False, owner: bool = False, upload: bool = False
) -> KnowledgeBase:
    """The knowledge base, or 404 whether it does not exist or the user may not see it.
    upload=True: one the user may add documents to (contributors too, unlike write=True).

    With owner=True a member who may read it but does not own it gets PermissionDenied (403)
    instead: they know it exists, and "not found" would only confuse them.
    """
    if owner:
        qs = KnowledgeBase.objects.owned_by(user)
    elif upload:
        qs = KnowledgeBase.objects.uploadable_by(user)
    else:
        qs = knowledge_bases_for(user=user, write=write)
    try:
        return qs.get(pk=pk)
    except KnowledgeBase.DoesNotExist:
        if owner and knowledge_bases_for(user=user).filter(pk=pk).exists():
            raise PermissionDenied(
                _("Only the owners of this knowledge base can do this.")
            ) from None
        raise Http404("No such knowledge base.") from None
    except (ValueError, TypeError):
        raise Http404("No such knowledge base.") from None


def readable_knowledge_bases(
    *, user, ids: Iterable[int], partial: bool = False
) -> list[KnowledgeBase] | None:
    """The knowledge bases with these ids that the user may read (the one way every chat,
    search and API request resolves them). None when any id is unknown or not readable, so
    callers answer 404 without saying which; with partial=True the readable ones (a
    conversation keeps asking the knowledge bases its user can still read)."""
    ids = list(ids)
    kbs = list(knowledge_bases_for(user=user).filter(pk__in=ids))
    if not partial and len(kbs) != len(set(ids)):
        return None
    return kbs


def visible_condition(*, user, prefix: str = "") -> Q:
    """The ORM twin of ingestion.scope's visibility and review parts, on documents reached
    through `prefix` ("" for Document, "document__" for Chunk): what recall may not return
    cannot be listed or opened either.

    - visibility: a restricted document is seen by the users and groups it names and by
      the owners of its knowledge base;
    - review: a document not approved is seen by the editors and owners of its knowledge
      base and by its uploader (they review it or wait for the review).
    """
    if user is None:  # the system itself
        return Q()
    if not user.is_authenticated:
        return Q(pk__in=[])
    owned = KnowledgeBase.objects.owned_by(user).values("pk")
    edited = KnowledgeBase.objects.editable_by(user).values("pk")
    p = prefix
    visible = (
        Q(**{f"{p}restricted": False})
        | Q(**{f"{p}knowledge_base__in": owned})
        | Q(**{f"{p}pk__in": Document.objects.filter(visible_to_users=user).values("pk")})
        | Q(
            **{
                f"{p}pk__in": Document.objects.filter(
                    visible_to_groups__in=user.groups.all()
                ).values("pk")
            }
        )
    )
    reviewed = (
        Q(**{f"{p}review_status": ReviewStatus.APPROVED})
        | Q(**{f"{p}knowledge_base__in": edited})
        | Q(**{f"{p}uploaded_by": user})
    )
    return visible & reviewed


def visible_documents(*, user, write: bool = False):
    """The documents `user` may read (write=True: in knowledge bases they may edit); the one
    selector behind every read of documents other than recall. user None: the system."""
    if user is None:
        return Document.objects.all()
    return Document.objects.filter(
        visible_condition(user=user),
        knowledge_base__in=knowledge_bases_for(user=user, write=write),
    )


def documents_for(*, user):
    return visible_documents(user=user)


def document_get(*, user, pk: int, write: bool = False) -> Document:
    """The document, or 404 whether it does not exist or the user may not see it (the same
    answer for both: a restricted document's existence is not revealed)."""
    qs = visible_documents(user=user, write=write)
    try:
        return qs.select_related("knowledge_base").get(pk=pk)
    except (Document.DoesNotExist, ValueError, TypeError):
        raise Http404("No such document.") from None


def chunks_for(*, user):
    return Chunk.objects.filter(
        visible_condition(user=user, prefix="document__"),
        knowledge_base__in=knowledge_bases_for(user=user),
    )


def visible_document_ids(*, user, ids: Iterable[int]) -> set[int]:
    """Which of these document ids `user` may read (filters stored sources, e.g. of a
    conversation, after a document was restricted)."""
    ids = {i for i in ids if isinstance(i, int)}
    if not ids:
        return set()
    return set(visible_documents(user=user).filter(pk__in=ids).values_list("pk", flat=True))


# --- the ingestion queue -------------------------------------------------------------------


@dataclass(frozen=True)
class QueuePlace:
    position: int  # 1: the next document a free worker takes
    eta_seconds: float | None  # until it is ready; None until some document has finished


@dataclass(frozen=True)
class Throughput:
    """Measured from recently finished documents: seconds per byte over all of them, and
    the quickest one's time as a floor (small files cost a fixed overhead, not bytes)."""

    seconds_per_byte: float
    min_seconds: float

    def estimate(self, size: int) -> float:
        return max(self.seconds_per_byte * size, self.min_seconds)


def ingest_throughput() -> Throughput | None:
    recent = (
        Document.objects.filter(status=DocumentStatus.READY, size__gt=0)
        .exclude(stats__seconds=None)
        .order_by("-updated_at", "-pk")
        .values_list("size", "stats")[: settings.RAG_QUEUE_ESTIMATE_DOCUMENTS]
    )
    sizes, seconds = [], []
    for size, stats in recent:
        spent = (stats or {}).get("seconds")
        if not isinstance(spent, dict):
            continue
        total = sum(v for v in spent.values() if isinstance(v, int | float))
        sizes.append(size)
        seconds.append(total)
    if not sizes:
        return None
    return Throughput(sum(seconds) / sum(sizes), min(seconds))


def queue_positions(*, document_ids: Iterable[int]) -> dict[int, QueuePlace]:
    """Place in line and estimated seconds until ready, for those of `document_ids` that are
    queued. One shared queue serves the whole site, so every queued document counts, in the
    order it was queued (updated_at: document_enqueue and the stale sweep set it).

    The estimate: the work left on the documents being processed now, plus the queued work
    ahead, spread over the worker slots, plus its own work. The slots are the documents in
    progress right now: while documents wait, every slot is busy, and this also counts
    workers on other machines, which no setting here knows of."""
    wanted = set(document_ids)
    if not wanted:
        return {}
    queued = list(
        # Contributions waiting for review are "queued" but not in the ingestion queue.
        Document.objects.filter(status=DocumentStatus.QUEUED, review_status=ReviewStatus.APPROVED)
        .order_by("updated_at", "pk")
        .values_list("pk", "size")
    )
    if not wanted.intersection(pk for pk, _ in queued):
        return {}
    throughput = ingest_throughput()
    active = list(
        Document.objects.filter(
            status__in=(DocumentStatus.PARSING, DocumentStatus.EMBEDDING)
        ).values_list("size", "progress")
    )
    slots = max(1, len(active))
    ahead = 0.0
    if throughput is not None:
        ahead = sum(throughput.estimate(size) * (1 - progress / 100) for size, progress in active)
    places: dict[int, QueuePlace] = {}
    for position, (pk, size) in enumerate(queued, start=1):
        own = throughput.estimate(size) if throughput is not None else 0.0
        if pk in wanted:
            eta = None if throughput is None else round(ahead / slots + own, 1)
            places[pk] = QueuePlace(position, eta)
        ahead += own
    return places
