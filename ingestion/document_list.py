"""A knowledge base's documents at ten thousand of them: searched by name, filtered by
status and file type, sorted, a page at a time; and the bulk actions on a selection
(re-ingest, delete) with one result per document.

Every read goes through `visible_documents`, so restricted documents and contributions
waiting for review stay out of the lists and the counts of those who may not see them, and
every bulk action through the single-document services (`document_enqueue`,
`documents_delete`) so their guards apply.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

from django.db import transaction
from django.db.models import Case, Count, F, IntegerField, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Lower
from django.urls import reverse
from django.utils.translation import gettext as _

from ingestion.chunk_editing import manual_edits
from ingestion.models import Chunk, Document, DocumentStatus, KnowledgeBase, ReviewStatus
from ingestion.selectors import queue_positions, visible_condition, visible_documents
from ingestion.services import (
    NotReingestable,
    delete_refusal,
    document_enqueue,
    documents_delete,
)

# Page sizes offered on the portal; 50 rows keep the page and each progress poll small.
PER_PAGE_CHOICES = (25, 50, 100, 200)
DOCUMENTS_PER_PAGE = 50
# One request acts on at most this many documents: a bulk delete cascades to every chunk
# and vector of each inside one transaction (100 documents of 100 chunks: 10,000 rows).
MAX_BULK_DOCUMENTS = 500
MAX_QUERY_CHARS = 200
TYPE_RE = re.compile(r"[a-z0-9]{1,16}")

# Review states listed with the pipeline's: a contribution waiting for review is "queued"
# in the pipeline's terms but is not in the ingestion queue.
STATUS_FILTERS = (*DocumentStatus.values, ReviewStatus.PENDING, ReviewStatus.REJECTED)
# The order a status sort follows: the pipeline's, not the alphabet's.
_STATUS_ORDER = Case(
    *(When(status=s, then=Value(i)) for i, s in enumerate(DocumentStatus.values)),
    default=Value(len(DocumentStatus.values)),
    output_field=IntegerField(),
)
SORTS = {
    "name": Lower("original_name"),
    "date": F("created_at"),
    "size": F("size"),
    "status": _STATUS_ORDER,
    "pages": F("page_count"),
}
DEFAULT_SORT = "-date"

BULK_ACTIONS = ("reingest", "delete")


class InvalidListQuery(ValueError):
    """A list parameter out of its choices; the message names them (API: 400)."""


@dataclass(frozen=True)
class DocumentListQuery:
    q: str = ""
    status: str = ""
    type: str = ""
    sort: str = DEFAULT_SORT

    @property
    def is_filtered(self) -> bool:
        return bool(self.q or self.status or self.type)


def list_query_from(
    *, q=None, status=None, type=None, sort=None, strict: bool = True
) -> DocumentListQuery:
    """The list parameters, cleaned. strict=False (the web page) drops a bad value instead
    of raising InvalidListQuery (the API), so an old bookmark still opens a list."""
    q = (q or "").replace("\x00", "").strip()[:MAX_QUERY_CHARS]
    status = (status or "").strip()
    type = (type or "").strip().lower().lstrip(".")
    sort = (sort or "").strip() or DEFAULT_SORT
    problems = {}
    if status and status not in STATUS_FILTERS:
        problems["status"] = f"status must be one of {', '.join(STATUS_FILTERS)}"
    if type and not TYPE_RE.fullmatch(type):
        problems["type"] = "type: a file extension of letters and digits, e.g. pdf"
    if sort.removeprefix("-") not in SORTS:
        names = ", ".join(SORTS)
        problems["sort"] = f"sort must be one of {names}, with - in front for descending"
    if problems and strict:
        raise InvalidListQuery("; ".join(problems.values()))
    return DocumentListQuery(
        q=q,
        status="" if "status" in problems else status,
        type="" if "type" in problems else type,
        sort=DEFAULT_SORT if "sort" in problems else sort,
    )


def knowledge_bases_named(knowledge_bases: QuerySet[KnowledgeBase], q: str | None):
    """Those of `knowledge_bases` whose name or description contains `q` (any case)."""
    q = (q or "").replace("\x00", "").strip()[:MAX_QUERY_CHARS]
    if not q:
        return knowledge_bases
    return knowledge_bases.filter(Q(name__icontains=q) | Q(description__icontains=q))


def with_summaries(*, user, knowledge_bases: Iterable[KnowledgeBase]) -> list[KnowledgeBase]:
    """The knowledge bases with n_documents, n_<status>, size and n_chunks set, counted over
    what `user` may see (restricted documents and others' contributions waiting for review
    count only for those who may open them). Three grouped queries for the whole list, not
    correlated subqueries per row: the chunks are counted once from an index, and those of
    the few documents hidden from this user are subtracted."""
    kbs = list(knowledge_bases)
    ids = [kb.pk for kb in kbs]
    visible = Document.objects.filter(visible_condition(user=user), knowledge_base_id__in=ids)
    by_status = (
        visible.order_by()
        .values("knowledge_base_id", "status")
        .annotate(n=Count("pk"), size=Sum("size"))
    )
    # COUNT(*), not COUNT(id): the (knowledge_base, is_parent) index alone answers it.
    chunks = dict(
        Chunk.objects.filter(knowledge_base_id__in=ids, is_parent=False)
        .order_by()
        .values("knowledge_base_id")
        .annotate(n=Count("*"))
        .values_list("knowledge_base_id", "n")
    )
    hidden = Document.objects.filter(knowledge_base_id__in=ids).exclude(
        visible_condition(user=user)
    )
    hidden_chunks = dict(
        Chunk.objects.filter(document__in=hidden.values("pk"), is_parent=False)
        .order_by()
        .values("knowledge_base_id")
        .annotate(n=Count("pk"))
        .values_list("knowledge_base_id", "n")
    )
    for kb in kbs:
        kb.n_documents, kb.size = 0, 0
        for status in DocumentStatus.values:
            setattr(kb, f"n_{status}", 0)
        kb.n_chunks = chunks.get(kb.pk, 0) - hidden_chunks.get(kb.pk, 0)
    found = {kb.pk: kb for kb in kbs}
    for row in by_status:
        kb = found[row["knowledge_base_id"]]
        kb.n_documents += row["n"]
        kb.size += row["size"] or 0
        setattr(kb, f"n_{row['status']}", row["n"])
    return kbs


def knowledge_base_documents(*, user, knowledge_base: KnowledgeBase) -> QuerySet[Document]:
    """The documents of one knowledge base that `user` may see."""
    return visible_documents(user=user).filter(knowledge_base=knowledge_base)


def documents_listed(
    *, user, knowledge_base: KnowledgeBase, query: DocumentListQuery
) -> QuerySet[Document]:
    """The list, filtered and sorted (ties broken by id, so pages never overlap), without
    per-document aggregates: counting chunks over the whole list before the page is cut
    would read every chunk of the knowledge base (see with_chunk_counts)."""
    docs = knowledge_base_documents(user=user, knowledge_base=knowledge_base)
    if query.q:
        docs = docs.filter(original_name__icontains=query.q)
    if query.status in ReviewStatus.values:
        docs = docs.filter(review_status=query.status)
    elif query.status:
        # The pipeline's states are those of approved documents: a contribution waiting for
        # review is not "queued" for ingestion.
        docs = docs.filter(status=query.status, review_status=ReviewStatus.APPROVED)
    if query.type:
        docs = docs.filter(original_name__iendswith=f".{query.type}")
    field = SORTS[query.sort.removeprefix("-")]
    descending = query.sort.startswith("-")
    # Only page counts may be missing (never parsed); NULLS LAST on the other keys would
    # keep PostgreSQL from reading an index in order (see migration 0011).
    nulls_last = True if query.sort.removeprefix("-") == "pages" else None
    order = field.desc(nulls_last=nulls_last) if descending else field.asc(nulls_last=nulls_last)
    return docs.order_by(order, "-pk" if descending else "pk")


def status_counts(*, user, knowledge_base: KnowledgeBase) -> dict[str, int]:
    """How many visible documents are in each state (the filter's numbers), in one query."""
    rows = (
        knowledge_base_documents(user=user, knowledge_base=knowledge_base)
        .order_by()
        .values("status", "review_status")
        .annotate(n=Count("pk"))
    )
    counts = dict.fromkeys(("all", *STATUS_FILTERS), 0)
    for row in rows:
        counts["all"] += row["n"]
        if row["review_status"] == ReviewStatus.APPROVED:
            counts[row["status"]] += row["n"]
        else:
            counts[row["review_status"]] += row["n"]
    return counts


def with_chunk_counts(documents: Iterable[Document]) -> list[Document]:
    """The page's documents with `n_chunks`, `n_edited`, `manual_edits` and `queue_place`
    set: one grouped query over the chunks of these documents only (the unique index on
    (document, ordinal) serves it), and the queue positions of those queued."""
    documents = list(documents)
    ids = [d.pk for d in documents]
    counts = {
        row["document_id"]: row
        for row in Chunk.objects.filter(document_id__in=ids)
        .order_by()
        .values("document_id")
        .annotate(
            n_chunks=Count("pk", filter=Q(is_parent=False)),
            n_edited=Count("pk", filter=Q(edited=True)),
        )
    }
    queued = [d.pk for d in documents if d.status == DocumentStatus.QUEUED]
    queue = queue_positions(document_ids=queued)
    for d in documents:
        row = counts.get(d.pk, {})
        d.n_chunks = row.get("n_chunks", 0)
        d.n_edited = row.get("n_edited", 0)
        d.manual_edits = manual_edits(document=d, edited=d.n_edited)
        d.queue_place = queue.get(d.pk)
    return documents


def with_faq_display(
    documents: list[Document], *, knowledge_base: KnowledgeBase, can_open_faq: bool
) -> list[Document]:
    """Set `faq`, `display_name` and `view_url` on each document: the knowledge base's FAQ
    document is listed as its entries, linked to the FAQ page for those who may open it
    (editors and owners), and is neither selected nor re-ingested nor deleted here."""
    from curation.faq import is_faq_document
    from curation.models import FaqEntry

    for d in documents:
        d.faq = is_faq_document(d)
        d.display_name = d.original_name
        d.view_url = None
        if d.faq:
            n = FaqEntry.objects.filter(knowledge_base=knowledge_base).count()
            d.display_name = _("FAQ entries (%(n)d)") % {"n": n}
            if can_open_faq:
                d.view_url = reverse("kb_faqs", args=[knowledge_base.pk])
    return documents


def documents_by_ids(*, user, knowledge_base: KnowledgeBase, ids: Iterable[int]) -> list[Document]:
    """These documents of the knowledge base, those the user may see, in id order (what
    the portal's progress poll asks about: the rows on its page)."""
    ids = sorted({i for i in ids if isinstance(i, int)})[: PER_PAGE_CHOICES[-1]]
    return list(
        knowledge_base_documents(user=user, knowledge_base=knowledge_base)
        .filter(pk__in=ids)
        .order_by("pk")
    )


def document_list_context(*, page, query: DocumentListQuery, per_page: int, counts) -> dict:
    """What the portal's template needs around the page: the filter choices with their
    counts, and the links of the sortable headers and the pager (each keeps the rest of
    the query)."""
    from django.conf import settings

    def link(**changes) -> str:
        params = {
            "q": query.q,
            "status": query.status,
            "type": query.type,
            "sort": query.sort,
            "per_page": per_page,
        }
        params.update(changes)
        defaults = {"sort": DEFAULT_SORT, "per_page": DOCUMENTS_PER_PAGE}
        kept = {k: v for k, v in params.items() if v and v != defaults.get(k)}
        return "?" + urlencode(kept)

    current, descending = query.sort.removeprefix("-"), query.sort.startswith("-")
    columns = {}
    for key in SORTS:
        if key == current:
            target = key if descending else f"-{key}"
        else:
            # Names A to Z first; dates, sizes and page counts largest first.
            target = key if key in ("name", "status") else f"-{key}"
        columns[key] = {
            "url": link(sort=target, page=None),
            "aria_sort": ("descending" if descending else "ascending") if key == current else "",
        }
    labels = {**dict(DocumentStatus.choices), **dict(ReviewStatus.choices)}
    return {
        "page": page,
        "documents": page.object_list,
        "query": query,
        "per_page": per_page,
        "per_page_choices": PER_PAGE_CHOICES,
        "counts": counts,
        "status_choices": [(s, labels[s], counts.get(s, 0)) for s in STATUS_FILTERS],
        "type_choices": sorted(settings.RAG_ALLOWED_EXTENSIONS),
        "columns": columns,
        "page_links": {
            "first": link(page=1),
            "previous": link(page=page.previous_page_number()) if page.has_previous() else "",
            "next": link(page=page.next_page_number()) if page.has_next() else "",
            "last": link(page=page.paginator.num_pages),
        },
        "current_url": link(page=page.number if page.number > 1 else None),
    }


# --- bulk actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkResult:
    id: int
    ok: bool
    # "", or why not: not_found (absent, or not the user's to change: one answer for both),
    # not_approved (a contribution: approve it from the review queue), refused (a guard).
    error: str = ""
    message: str = ""


class BulkRejected(ValueError):
    """The request as a whole is not valid (unknown action, no ids, too many)."""


def clean_ids(values: Iterable) -> list[int]:
    """Distinct positive ids in the order given; anything else is dropped."""
    ids: dict[int, None] = {}
    for value in values:
        try:
            number = int(value)
        except (TypeError, ValueError):
            continue
        if 0 < number < 2**63:
            ids[number] = None
    return list(ids)


def documents_bulk(
    *, user, knowledge_base: KnowledgeBase, action: str, ids: list[int], request=None
) -> list[BulkResult]:
    """Re-ingest or delete these documents of the knowledge base, one result per id in the
    order given. Only documents `user` may change (editors and owners, visibility applied)
    are touched; the others answer not_found, as the single-document endpoints do.
    `request` only for the audit records of deletions."""
    from ragapp.audit import audit_record

    if action not in BULK_ACTIONS:
        raise BulkRejected(f"action must be one of {', '.join(BULK_ACTIONS)}")
    if not ids:
        raise BulkRejected("no documents selected")
    if len(ids) > MAX_BULK_DOCUMENTS:
        raise BulkRejected(f"at most {MAX_BULK_DOCUMENTS} documents at once")
    results: dict[int, BulkResult] = {}
    with transaction.atomic():
        found = {
            d.pk: d
            for d in visible_documents(user=user, write=True)
            .filter(knowledge_base=knowledge_base, pk__in=ids)
            .select_for_update(of=("self",))
            .order_by("pk")
        }
        if action == "delete":
            doomed = []
            for pk, document in found.items():
                refusal = delete_refusal(document=document)
                if refusal:
                    results[pk] = BulkResult(pk, False, "refused", refusal)
                    continue
                audit_record(request=request, actor=user, action="document.delete", obj=document)
                doomed.append(document)
                results[pk] = BulkResult(pk, True)
            documents_delete(documents=doomed)
        else:
            for pk, document in found.items():
                results[pk] = _reingest(document)
    missing = _("No such document.")
    return [results.get(pk) or BulkResult(pk, False, "not_found", missing) for pk in ids]


def _reingest(document: Document) -> BulkResult:
    if document.review_status != ReviewStatus.APPROVED:
        # Indexing a contribution is approving it: that goes through the review queue.
        return BulkResult(document.pk, False, "not_approved", _("This document is not approved."))
    try:
        # A savepoint each: a guard that refuses one document leaves the others queued.
        with transaction.atomic():
            document_enqueue(document=document, force=True)
    except NotReingestable as exc:
        return BulkResult(document.pk, False, "refused", str(exc))
    return BulkResult(document.pk, True)
