"""Ingestion services: create documents from uploads, and turn a document into chunks.

`document_ingest` is idempotent: it takes the document row under `select_for_update`,
skips a document whose chunks already match its content and configuration, and replaces
the previous chunks in one transaction, so a retry or a worker killed mid-way never leaves
duplicate or partial chunks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import mimetypes
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.postgres.search import SearchVector
from django.core.files.base import File
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Now
from django.utils.translation import gettext as _

from ingestion.chunking import ChunkDraft, ChunkSizes, chunk_sections
from ingestion.models import (
    Chunk,
    ChunkEmbedding,
    Document,
    DocumentStatus,
    KnowledgeBase,
    ReviewStatus,
    Role,
)
from retrieval.backends import embedder_available, get_embedder
from retrieval.text import TS_CONFIG, segment

logger = logging.getLogger(__name__)


class UploadRejected(Exception):
    """An upload refused before it became a document; the message is user-facing and
    `reason` a code that callers act on (the API's 413 and 415) without reading the text."""

    reason = "invalid"  # "too_large", "unsupported", "empty", "invalid_url", "invalid"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class UnsupportedUpload(UploadRejected):
    """Refused for its type: the name's extension, or content no parser here can read."""

    reason = "unsupported"


class TransientIngestError(Exception):
    """Worth retrying: the task retries these with backoff."""


class NotReingestable(Exception):
    """A document that ingestion must not touch (a knowledge base's FAQ document); the
    message is user-facing."""


class ClaimLost(Exception):
    """Another run took the document over (re-queued by a user or by the stale-claim sweep):
    this run must not write its chunks."""


# A document in these states is held by a running task, which keeps its heartbeat fresh.
ACTIVE_STATUSES = (DocumentStatus.PARSING, DocumentStatus.EMBEDDING)


@dataclass(frozen=True)
class UploadResult:
    document: Document | None
    created: bool
    error: str = ""


def allowed_extension(name: str) -> bool:
    ext = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    return ext in {e.lower() for e in settings.RAG_ALLOWED_EXTENSIONS}


def sha256_of(fileobj) -> str:
    digest = hashlib.sha256()
    fileobj.seek(0)
    for block in iter(lambda: fileobj.read(1024 * 1024), b""):
        digest.update(block)
    fileobj.seek(0)
    return digest.hexdigest()


def validate_upload(*, name: str, size: int) -> None:
    if not allowed_extension(name):
        allowed = ", ".join(sorted(settings.RAG_ALLOWED_EXTENSIONS))
        raise UnsupportedUpload(f"{name}: file type not supported (allowed: {allowed})")
    if size > settings.RAG_MAX_UPLOAD_BYTES:
        limit_mb = settings.RAG_MAX_UPLOAD_BYTES / 1024 / 1024
        raise UploadRejected(
            f"{name}: file is larger than the {limit_mb:.0f} MB limit", reason="too_large"
        )


def check_upload_content(*, fileobj, name: str) -> None:
    """Refuse a file whose first bytes already say the parser cannot read it (a ZIP or a
    legacy Word file named .pdf, random bytes named .docx): the uploader hears it in the
    upload's answer, not from a failed document minutes later. Only the parser's own type
    detection runs (the file's head, and a ZIP's directory), never the parse itself."""
    from ingestion.parsing import SUPPORTED_EXTENSIONS, ParseError, detect_type

    with _readable_path(fileobj, name) as path:
        try:
            kind = detect_type(path, name, mimetypes.guess_type(name)[0])
        except ParseError as exc:
            raise UnsupportedUpload(f"{name}: {exc}") from exc
    spreadsheet = SUPPORTED_EXTENSIONS["xls"] + SUPPORTED_EXTENSIONS["xlsx"]
    if kind == "xls" and Path(name).suffix.lower() not in spreadsheet:
        # The detector hands every other OLE file to the spreadsheet reader; under a PDF or
        # text name it is a legacy .doc/.ppt renamed, which nothing here can read.
        raise UnsupportedUpload(
            f"{name}: the content is a legacy Microsoft Office file (.doc, .xls or .ppt), "
            "not what its name says; save it as .docx, .xlsx or .pptx"
        )


@contextlib.contextmanager
def _readable_path(fileobj, name: str):
    """A path to the upload's bytes for the type detector: the upload's own temporary file
    or the opened file's path when there is one, else a temporary copy (an upload held in
    memory is under FILE_UPLOAD_MAX_MEMORY_SIZE)."""
    temporary = getattr(fileobj, "temporary_file_path", None)
    if temporary is not None:
        yield Path(temporary())
        return
    real = getattr(getattr(fileobj, "file", fileobj), "name", None)
    if isinstance(real, str) and os.path.isfile(real):
        yield Path(real)
        return
    with tempfile.NamedTemporaryFile(suffix=Path(name).suffix) as handle:
        fileobj.seek(0)
        shutil.copyfileobj(fileobj, handle)
        handle.flush()
        fileobj.seek(0)
        yield Path(handle.name)


def document_create(
    *,
    knowledge_base: KnowledgeBase,
    fileobj,
    name: str,
    uploaded_by=None,
    source_url: str = "",
    enqueue: bool = True,
    tags: list[str] | None = None,
    meta: dict | None = None,
    visible_to: DocumentVisibility | None = None,
) -> UploadResult:
    """Store an uploaded file as a queued Document (or find the identical one already there).
    `tags`, `meta` and `visible_to` are validated by the caller (ingestion.documents).

    The row is inserted before the file is written: when the same content arrives twice at
    once, the unique (knowledge base, content hash) constraint refuses the second insert and
    no file is stored for it; a file written for a row that then fails is deleted again."""
    from ragapp.validation import storable_text

    name = storable_text(os.path.basename(name)) or "upload"
    size = getattr(fileobj, "size", None)
    if size is None:
        fileobj.seek(0, os.SEEK_END)
        size = fileobj.tell()
        fileobj.seek(0)
    validate_upload(name=name, size=size)
    if size == 0:
        # Before the duplicate check: every empty file has the same hash.
        raise UploadRejected(f"{name}: the file is empty", reason="empty")
    check_upload_content(fileobj=fileobj, name=name)
    content_hash = sha256_of(fileobj)

    def duplicate() -> UploadResult | None:
        existing = Document.objects.filter(
            knowledge_base=knowledge_base, content_hash=content_hash
        ).first()
        if existing is None:
            return None
        return UploadResult(
            existing, False, f"{name}: same content as '{existing.original_name}', not added again"
        )

    found = duplicate()
    if found:
        return found
    document = Document(
        knowledge_base=knowledge_base,
        original_name=name,
        source_url=source_url,
        mime_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
        size=size,
        content_hash=content_hash,
        uploaded_by=uploaded_by,
        tags=list(tags or []),
        meta=dict(meta or {}),
        review_status=review_status_for(knowledge_base=knowledge_base, user=uploaded_by),
    )
    # A contribution waiting for review is not indexed: approving it queues it (review.py).
    enqueue = enqueue and document.review_status == ReviewStatus.APPROVED
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction stays usable
            document.save()
            document.file.save(name, File(fileobj, name=name), save=False)
            document.save(update_fields=["file"])
            if visible_to is not None:
                document_set_visibility(document=document, visible_to=visible_to)
            if enqueue:
                document_enqueue(document=document)
    except IntegrityError:
        _discard_file(document)
        found = duplicate()  # the concurrent twin committed before our insert was refused
        if found:
            return found
        raise
    except BaseException:
        _discard_file(document)
        raise
    return UploadResult(document, True)


@dataclass(frozen=True)
class UploadOutcome:
    """One file of an upload: the document it became, or why it did not."""

    name: str
    document: Document | None = None
    error: str = ""
    reason: str = ""  # UploadRejected.reason, or "duplicate"; "" when accepted

    @property
    def accepted(self) -> bool:
        return self.document is not None and not self.reason


def documents_upload(
    *,
    knowledge_base: KnowledgeBase,
    files: Iterable[tuple[str, object]],
    uploaded_by,
    request=None,
    tags: list[str] | None = None,
    meta: dict | None = None,
    visible_to: DocumentVisibility | None = None,
    audit_details: dict | None = None,
) -> list[UploadOutcome]:
    """The upload loop of the web portal, the API and `manage.py ingest`: each (name, file)
    becomes a queued document in its own transaction with its audit event, or an outcome
    saying why not; one refused file never stops the others."""
    from ragapp.audit import audit_record

    outcomes = []
    for name, fileobj in files:
        try:
            with transaction.atomic():
                result = document_create(
                    knowledge_base=knowledge_base,
                    fileobj=fileobj,
                    name=name,
                    uploaded_by=uploaded_by,
                    tags=tags,
                    meta=meta,
                    visible_to=visible_to,
                )
                if result.created:
                    audit_record(
                        request=request,
                        actor=None if request is not None else uploaded_by,
                        action="document.upload",
                        obj=result.document,
                        details=audit_details,
                    )
        except UploadRejected as exc:
            outcomes.append(UploadOutcome(name, error=str(exc), reason=exc.reason))
            continue
        if result.created:
            outcomes.append(UploadOutcome(name, document=result.document))
        else:
            outcomes.append(
                UploadOutcome(
                    name, document=result.document, error=result.error, reason="duplicate"
                )
            )
    return outcomes


@dataclass(frozen=True)
class DocumentVisibility:
    """Who may see a restricted document (users and groups among the knowledge base's
    members); None on a document means it is not restricted."""

    users: tuple = ()  # User objects
    groups: tuple = ()  # django.contrib.auth Group objects


def document_set_visibility(*, document: Document, visible_to: DocumentVisibility | None) -> None:
    """Restrict a document to these users and groups, or lift the restriction (None)."""
    with transaction.atomic():
        document.restricted = visible_to is not None
        document.save(update_fields=["restricted", "updated_at"])
        document.visible_to_users.set(visible_to.users if visible_to else [])
        document.visible_to_groups.set(visible_to.groups if visible_to else [])


def _discard_file(document: Document) -> None:
    if document.file and document.file.name:
        document.file.storage.delete(document.file.name)


def document_create_from_url(*, knowledge_base: KnowledgeBase, url: str, uploaded_by=None):
    """A document whose content the worker fetches (size- and time-limited) from `url`.
    Raises UploadRejected for a URL the fetch would refuse (scheme, local/private address)."""
    from ingestion.fetching import check_url
    from ingestion.parsing import ParseError

    try:
        # A name that does not resolve right now is left to the worker's fetch (it may be a
        # passing DNS failure, and its error lands on the document); refused addresses are not.
        check_url(url, allow_private=settings.RAG_URL_ALLOW_PRIVATE, require_resolvable=False)
    except ParseError as exc:
        raise UploadRejected(str(exc), reason="invalid_url") from exc
    placeholder = hashlib.sha256(f"url:{url}".encode()).hexdigest()
    review_status = review_status_for(knowledge_base=knowledge_base, user=uploaded_by)
    document, created = Document.objects.get_or_create(
        knowledge_base=knowledge_base,
        content_hash=placeholder,
        defaults={
            "original_name": url[:500],
            "source_url": url,
            "mime_type": "text/html",
            "uploaded_by": uploaded_by,
            "review_status": review_status,
        },
    )
    # Pending pages wait for review; a contributor adding a page again does not re-fetch it.
    if document.review_status == ReviewStatus.APPROVED == review_status:
        document_enqueue(document=document, force=not created)
    return document


def review_status_for(*, knowledge_base: KnowledgeBase, user) -> str:
    """A new document's review status: pending when the knowledge base requires review and
    the uploader is a contributor there; editors' and owners' uploads (and the system's,
    user None) are approved at once."""
    if not knowledge_base.require_review or user is None:
        return ReviewStatus.APPROVED
    if knowledge_base.role_of(user) in (Role.OWNER, Role.EDITOR):
        return ReviewStatus.APPROVED
    return ReviewStatus.PENDING


def reingest_refusal(*, document: Document) -> str:
    """Why `document` cannot be queued ("" when it can). A knowledge base's FAQ document has
    no file: its chunks are the FAQ entries, written by curation.faq, and an ingestion run
    would fail on the missing file or replace the entries' chunks with nothing."""
    from curation.faq import is_faq_document

    if is_faq_document(document):
        return _(
            "These are the knowledge base's FAQ entries: they have no file to re-ingest. "
            "Change or delete them on the FAQ page."
        )
    return ""


def delete_refusal(*, document: Document) -> str:
    """Why `document` cannot be deleted on its own ("" when it can): the FAQ document goes
    with its entries, which are deleted on the FAQ page (deleting the document would leave
    entries that answer questions without a passage behind them)."""
    from curation.faq import is_faq_document

    if is_faq_document(document):
        return _(
            "These are the knowledge base's FAQ entries: delete them on the FAQ page, "
            "not as a document."
        )
    return ""


def document_enqueue(*, document: Document, force: bool = False) -> None:
    """Queue (or re-queue) a document; `force` re-ingests even when its chunks are current.
    Raises NotReingestable for a document ingestion must not touch (reingest_refusal)."""
    refusal = reingest_refusal(document=document)
    if refusal:
        raise NotReingestable(refusal)
    task_id = str(uuid.uuid4())
    # The new task id supersedes any earlier message for this document (see _claim).
    # updated_at is the time it joined the queue: queue positions are counted by it.
    fields = {
        "updated_at": Now(),
        "status": DocumentStatus.QUEUED,
        "progress": 0,
        "error": "",
        "task_id": task_id,
        "heartbeat_at": None,
        "interruptions": 0,
    }
    if force:
        fields["ingest_signature"] = ""
    Document.objects.filter(pk=document.pk).update(**fields)
    _send_on_commit(document.pk, task_id)


def _send_on_commit(document_id: int, task_id: str) -> None:
    from ingestion.tasks import ingest_document

    transaction.on_commit(lambda: ingest_document.apply_async((document_id,), task_id=task_id))


@dataclass(frozen=True)
class StaleSweep:
    requeued: list[int]
    failed: list[int]


def documents_requeue_stale(*, older_than: timedelta | None = None, limit: int = 100) -> StaleSweep:
    """Queue again the documents whose worker died mid-way: parsing or embedding with no
    heartbeat for `older_than` (RAG_INGEST_STALE_SECONDS); fail those interrupted
    RAG_INGEST_MAX_ATTEMPTS times. Every worker runs this; rows are taken FOR UPDATE SKIP
    LOCKED and leave parsing/embedding in the same transaction, so two sweeps never queue a
    document twice. Queued documents are left alone: they may wait behind a long queue."""
    if older_than is None:
        older_than = timedelta(seconds=settings.RAG_INGEST_STALE_SECONDS)
    cutoff = Now() - older_than  # the database's clock, the one heartbeats are written with
    requeued: list[int] = []
    failed: list[int] = []
    with transaction.atomic():
        stale = (
            Document.objects.select_for_update(skip_locked=True)
            .filter(status__in=ACTIVE_STATUSES)
            .filter(
                Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, updated_at__lt=cutoff)
            )
            .order_by("pk")
            .only("pk", "interruptions")[:limit]
        )
        for document in stale:
            attempts = document.interruptions + 1
            rows = Document.objects.filter(pk=document.pk)
            if attempts >= settings.RAG_INGEST_MAX_ATTEMPTS:
                rows.update(
                    status=DocumentStatus.FAILED,
                    progress=100,
                    error=f"processing was interrupted {attempts} times (the worker crashed "
                    "or was stopped, perhaps out of memory on this file)",
                    interruptions=attempts,
                    heartbeat_at=None,
                )
                failed.append(document.pk)
                continue
            task_id = str(uuid.uuid4())
            rows.update(
                updated_at=Now(),  # joins the end of the queue (queue positions)
                status=DocumentStatus.QUEUED,
                progress=0,
                error="",
                task_id=task_id,
                heartbeat_at=None,
                interruptions=attempts,
            )
            _send_on_commit(document.pk, task_id)
            requeued.append(document.pk)
    if requeued or failed:
        logger.warning(
            "documents interrupted mid-way (dead worker): re-queued %s, failed %s", requeued, failed
        )
    return StaleSweep(requeued, failed)


def knowledge_base_delete(*, knowledge_base: KnowledgeBase) -> None:
    """Remove a knowledge base, its documents, chunks, stored files and the reranker models
    trained on it (those under MEDIA_ROOT/rerankers), in one transaction."""
    from retrieval.models import RerankerModel

    models_root = (Path(settings.MEDIA_ROOT) / "rerankers").resolve()
    folders = [
        Path(p).resolve()
        for p in RerankerModel.objects.filter(knowledge_base=knowledge_base)
        .exclude(path="")
        .values_list("path", flat=True)
    ]
    with transaction.atomic():
        for document in knowledge_base.documents.all():
            document_delete(document=document)
        knowledge_base.delete()
        for folder in folders:
            if folder.is_relative_to(models_root) and folder != models_root:
                transaction.on_commit(lambda f=folder: shutil.rmtree(f, ignore_errors=True))


def document_delete(*, document: Document) -> None:
    """Remove a document, its chunks (cascade) and its stored file."""
    documents_delete(documents=[document])


def documents_delete(*, documents: Iterable[Document]) -> None:
    """Remove documents, their chunks and vectors and their stored files. One cascade for
    all of them: the chunks of every document are collected and deleted together, a few
    queries whatever the count, not a round of them per document (bulk delete)."""
    documents = list(documents)
    files = [(d.file.storage, d.file.name) for d in documents if d.file.name]
    Document.objects.filter(pk__in=[d.pk for d in documents]).delete()
    for storage, path in files:
        transaction.on_commit(lambda s=storage, p=path: s.delete(p))


# --- the pipeline --------------------------------------------------------------------------


def chunk_sizes_for(kb: KnowledgeBase) -> ChunkSizes:
    return ChunkSizes(
        chunk_tokens=kb.setting("chunk_tokens"),
        overlap_tokens=kb.setting("chunk_overlap_tokens"),
        parent_tokens=kb.setting("parent_chunk_tokens"),
    )


def token_counter_for(kb: KnowledgeBase) -> Callable[[str], int]:
    """Sizes are counted with the first of the knowledge base's embedders."""
    embedder = get_embedder(kb.embedders[0])
    return embedder.count_tokens


def ingest_signature(kb: KnowledgeBase, document: Document) -> str:
    config = {
        "hash": document.content_hash,
        "sizes": chunk_sizes_for(kb).__dict__,
        "embedders": sorted(kb.embedders),
        "version": 1,
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


class _Progress:
    """Writes progress (and a heartbeat) to the row at most every half second (no save(): no
    clobbering), and only while this run still holds the claim."""

    def __init__(self, document_ids: int | list[int], claim: str) -> None:
        self.document_ids = [document_ids] if isinstance(document_ids, int) else document_ids
        self.claim = claim
        # The claim has just written progress: a small document's whole run then costs no
        # progress writes but its status changes.
        self.last = time.monotonic()

    def set(self, percent: float, *, status: str | None = None) -> None:
        now = time.monotonic()
        if status is None and now - self.last < 0.5:
            return
        self.last = now
        fields: dict = {"progress": max(0, min(100, int(percent))), "heartbeat_at": Now()}
        if status:
            fields["status"] = status
        Document.objects.filter(pk__in=self.document_ids, task_id=self.claim).update(**fields)


class _Heartbeat:
    """Touches the claimed documents' heartbeat every RAG_INGEST_HEARTBEAT_SECONDS from a
    thread while the pipeline runs, so that one long step without progress calls (OCR of a
    page, a large embedding batch) does not look like a dead worker to the sweep."""

    def __init__(self, claim: str, document_ids: list[int]) -> None:
        self.claim = claim
        self.document_ids = document_ids
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ingest-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        if settings.RAG_INGEST_HEARTBEAT_SECONDS > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()

    def _run(self) -> None:
        from django.db import connection

        try:
            while not self.stopped.wait(settings.RAG_INGEST_HEARTBEAT_SECONDS):
                try:
                    Document.objects.filter(
                        pk__in=list(self.document_ids),  # the run may add companions
                        task_id=self.claim,
                        status__in=ACTIVE_STATUSES,
                    ).update(heartbeat_at=Now())
                except DatabaseError:
                    # One missed beat is harmless (STALE spans several); keep trying.
                    logger.warning("ingestion heartbeat failed", exc_info=True)
                    connection.close()
        finally:
            connection.close()  # this thread's own connection


def _fetch_into_storage(document: Document) -> None:
    """Download a URL document's page once and keep it like an uploaded file."""
    from django.core.files.base import ContentFile

    from ingestion.fetching import fetch_url
    from ingestion.parsing import ParseError

    content, filename, mime_type = fetch_url(document.source_url, limits=parse_limits())
    content_hash = hashlib.sha256(content).hexdigest()
    twin = (
        Document.objects.filter(
            knowledge_base_id=document.knowledge_base_id, content_hash=content_hash
        )
        .exclude(pk=document.pk)
        .first()
    )
    if twin:
        raise ParseError(f"same content as '{twin.original_name}', not added again")
    document.file.save(filename, ContentFile(content), save=False)
    document.mime_type = mime_type
    document.size = len(content)
    document.content_hash = content_hash
    document.save(update_fields=["file", "mime_type", "size", "content_hash", "updated_at"])


def _local_copy(document: Document) -> tuple[Path, Callable[[], None]]:
    """A local path for the parsers, whatever storage backend holds the file."""
    if not document.file and document.source_url:
        _fetch_into_storage(document)
    try:
        return Path(document.file.path), lambda: None
    except (NotImplementedError, ValueError):
        pass
    suffix = Path(document.original_name).suffix
    handle = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
    with document.file.open("rb") as src, handle:
        for block in iter(lambda: src.read(1024 * 1024), b""):
            handle.write(block)
    return Path(handle.name), lambda: os.unlink(handle.name)


@dataclass
class _Work:
    """One document on its way through the pipeline."""

    document: Document
    signature: str
    progress: _Progress
    claim: str
    timings: dict = field(default_factory=dict)
    drafts: list[ChunkDraft] = field(default_factory=list)
    parsed: object = None


def _claim(
    document_id: int, *, task_id: str | None = None, claim: str | None = None
) -> _Work | None:
    """Lock the row, take it for this run (task_id, or `claim` for in-process runs) and mark
    it parsing. None when there is nothing to do: the message was superseded (the document
    was queued again since: retry, re-ingest, stale sweep), its chunks are already current,
    or another run is alive on it (its heartbeat is fresh)."""
    with transaction.atomic():
        document = (
            Document.objects.select_for_update()
            .select_related("knowledge_base")
            .get(pk=document_id)
        )
        if task_id and document.task_id and document.task_id != task_id:
            return None  # e.g. the original message redelivered after its worker died
        if document.review_status != ReviewStatus.APPROVED:
            # Only approved documents are indexed: recall relies on it (ingestion.scope).
            return None
        signature = ingest_signature(document.knowledge_base, document)
        if document.status == DocumentStatus.READY and document.ingest_signature == signature:
            return None  # a duplicate delivery of a finished task
        stale_after = timedelta(seconds=settings.RAG_INGEST_STALE_SECONDS)
        beating = Document.objects.filter(pk=document_id, heartbeat_at__gte=Now() - stale_after)
        if document.status in ACTIVE_STATUSES and beating.exists():
            return None  # a second delivery while the first run is still going
        claim = task_id or claim or f"local-{uuid.uuid4()}"
        fields = {"status": DocumentStatus.PARSING, "progress": 1, "error": "", "task_id": claim}
        Document.objects.filter(pk=document_id).update(
            **fields, updated_at=Now(), heartbeat_at=Now()
        )
        for name, value in fields.items():
            setattr(document, name, value)
    return _Work(document, signature, _Progress(document_id, claim), claim)


def parse_limits():
    from ingestion.parsing import ParseLimits

    return ParseLimits(
        max_uncompressed_bytes=settings.RAG_MAX_UNCOMPRESSED_BYTES,
        max_sheet_rows=settings.RAG_MAX_SHEET_ROWS,
        url_timeout=settings.RAG_URL_FETCH_TIMEOUT,
        url_max_bytes=settings.RAG_URL_FETCH_MAX_BYTES,
        url_allow_private=settings.RAG_URL_ALLOW_PRIVATE,
        ocr_languages=settings.RAG_OCR_LANGUAGES,
        max_image_pixels=settings.RAG_MAX_IMAGE_PIXELS,
        ocr_max_seconds=settings.RAG_OCR_MAX_SECONDS_PER_DOCUMENT,
    )


def _parse_and_chunk(work: _Work) -> None:
    from ingestion.parsing import ParseError, parse_file

    document, kb = work.document, work.document.knowledge_base
    t0 = time.perf_counter()
    path, cleanup = _local_copy(document)
    try:
        work.parsed = parse_file(
            path,
            filename=Path(document.file.name).name
            if document.source_url
            else document.original_name,
            mime_type=document.mime_type,
            limits=parse_limits(),
            progress=lambda f: work.progress.set(1 + 44 * f),
        )
    finally:
        cleanup()
    work.timings["parse"] = time.perf_counter() - t0
    document_parsed(document_id=document.pk, page_count=work.parsed.page_count, claim=work.claim)
    t0 = time.perf_counter()
    from ingestion.contents import mark_contents_pages

    work.drafts = chunk_sections(
        mark_contents_pages(work.parsed.sections),
        sizes=chunk_sizes_for(kb),
        count_tokens=token_counter_for(kb),
    )
    work.timings["chunk"] = time.perf_counter() - t0
    if not any(not d.is_parent for d in work.drafts):
        raise ParseError("no text could be extracted from this file")
    work.progress.set(48)


def document_parsed(*, document_id: int, page_count: int | None, claim: str) -> None:
    """Show the page count (and parsing done) as soon as parsing ends, not only once the
    document is ready: a long PDF spends most of its time embedding after this."""
    Document.objects.filter(pk=document_id, task_id=claim).update(
        page_count=page_count, progress=45, heartbeat_at=Now()
    )


def _store(work: _Work, vectors: dict[str, np.ndarray]) -> None:
    parsed, drafts = work.parsed, work.drafts
    stats = {
        "sections": len(parsed.sections),
        "chunks": sum(1 for d in drafts if not d.is_parent),
        "parents": sum(1 for d in drafts if d.is_parent),
        "warnings": list(parsed.warnings),
    }
    store_chunks(
        document_id=work.document.pk,
        drafts=drafts,
        vectors=vectors,
        language=parsed.language,
        page_count=parsed.page_count,
        signature=work.signature,
        stats=stats,
        timings=work.timings,
        claim=work.claim,
    )


def _guard(document_id: int, step, *, claim: str) -> bool:
    """Run one step; a permanent failure lands on the row. True when the step succeeded."""
    from ingestion.parsing import ParseError, TransientParseError

    try:
        try:
            step()
        except DatabaseError as exc:
            if _momentary(exc):
                raise TransientIngestError(
                    f"database busy ({exc.__cause__.__class__.__name__})"
                ) from exc
            raise
        return True
    except ClaimLost:
        logger.warning("document %s was taken over by another run; this one stops", document_id)
    except SoftTimeLimitExceeded:
        document_fail(
            document_id, "processing took too long and was stopped (time limit)", claim=claim
        )
    except ParseError as exc:
        document_fail(document_id, str(exc), claim=claim)
    except (TransientParseError, TransientIngestError):
        # Queued until the task's retry runs: no heartbeat meanwhile, and the stale sweep
        # must not count the wait as a crash.
        Document.objects.filter(pk=document_id, task_id=claim).update(
            status=DocumentStatus.QUEUED, heartbeat_at=None, updated_at=Now()
        )
        raise
    except Exception as exc:  # noqa: BLE001 - stored on the row for the user, logged in full
        logger.exception("ingesting document %s failed", document_id)
        document_fail(
            document_id,
            f"could not process this file ({type(exc).__name__}: {exc})"[:1000],
            claim=claim,
        )
    return False


def _momentary(exc: DatabaseError) -> bool:
    """A deadlock or serialization failure: the same work succeeds when run again (the
    transaction was rolled back whole), unlike e.g. a text too long for a tsvector."""
    from psycopg import errors

    return isinstance(exc.__cause__, (errors.DeadlockDetected, errors.SerializationFailure))


def _status_of(document_id: int) -> str:
    return Document.objects.filter(pk=document_id).values_list("status", flat=True).first() or ""


def document_ingest(*, document_id: int, task_id: str | None = None, batch: int = 1) -> str:
    """Parse, chunk, embed and store one document; `task_id` is the Celery task's, checked
    against the document's claim. With `batch` > 1 (the worker passes
    RAG_INGEST_BATCH_DOCUMENTS) a small document takes up to `batch` - 1 queued small files
    of its knowledge base along and embeds them together (_gather_companions). Returns the
    document's status afterwards."""
    work = _claim(document_id, task_id=task_id)
    if work is None:
        return _status_of(document_id)
    claimed = [document_id]  # the heartbeat keeps every document of the run alive
    with _Heartbeat(work.claim, claimed):
        if not _guard(document_id, lambda: _parse_and_chunk(work), claim=work.claim):
            return _status_of(document_id)
        group = [work]
        if batch > 1 and _children(work) < EMBED_BATCH:
            group += _gather_companions(work, batch=batch, claimed=claimed)
        if len(group) > 1:
            ok = _embed_and_store_group(group)
        else:
            ok = _guard(document_id, lambda: _embed_and_store(work), claim=work.claim)
    queue_rerank_embedding(work.document.knowledge_base, [w.document.pk for w in group])
    return DocumentStatus.READY if ok else _status_of(document_id)


def _children(work: _Work) -> int:
    return sum(1 for d in work.drafts if not d.is_parent)


def _embed_and_store(work: _Work) -> None:
    kb = work.document.knowledge_base
    work.progress.set(50, status=DocumentStatus.EMBEDDING)
    t0 = time.perf_counter()
    vectors = embed_drafts(kb, work.drafts, progress=lambda f: work.progress.set(50 + 45 * f))
    work.timings["embed"] = time.perf_counter() - t0
    _store(work, vectors)


def _claim_companions(primary: _Work, *, limit: int) -> list[_Work]:
    """Take up to `limit` queued small files of the primary's knowledge base for its run,
    oldest first, skipping rows another worker holds. Their own queue messages are then
    superseded (_claim: the task id differs) and end as no-ops. URL documents (a fetch can
    fail for a while) and documents interrupted before are left to run alone."""
    kb = primary.document.knowledge_base
    with transaction.atomic():
        documents = list(
            Document.objects.select_for_update(skip_locked=True)
            .filter(
                knowledge_base_id=kb.pk,
                status=DocumentStatus.QUEUED,
                review_status=ReviewStatus.APPROVED,
                source_url="",
                interruptions=0,
                size__lte=settings.RAG_INGEST_BATCH_MAX_BYTES,
            )
            .exclude(file="")
            .order_by("updated_at", "pk")[:limit]
        )
        if not documents:
            return []
        Document.objects.filter(pk__in=[d.pk for d in documents]).update(
            status=DocumentStatus.PARSING,
            progress=1,
            error="",
            task_id=primary.claim,
            heartbeat_at=Now(),
            updated_at=Now(),
        )
    works = []
    for document in documents:
        document.knowledge_base = kb
        document.status, document.task_id = DocumentStatus.PARSING, primary.claim
        signature = ingest_signature(kb, document)
        progress = _Progress(document.pk, primary.claim)
        works.append(_Work(document, signature, progress, primary.claim))
    return works


def _gather_companions(primary: _Work, *, batch: int, claimed: list[int]) -> list[_Work]:
    """Claim and parse queued small files of the same knowledge base until the group's
    chunks fill one embedding batch or the group has `batch` documents. A companion that
    fails to parse fails alone (its message is on its row); one that fails for a while
    goes back to the queue alone."""
    companions: list[_Work] = []
    children = _children(primary)
    while len(companions) + 1 < batch and children < EMBED_BATCH:
        per_document = max(1.0, children / (len(companions) + 1))
        wanted = math.ceil((EMBED_BATCH - children) / per_document)
        taken = _claim_companions(primary, limit=min(batch - 1 - len(companions), wanted))
        if not taken:
            break
        for companion in taken:
            claimed.append(companion.document.pk)
            if _companion_step(companion, lambda c=companion: _parse_and_chunk(c)):
                companions.append(companion)
                children += _children(companion)
    return companions


def _companion_step(work: _Work, step) -> bool:
    """_guard for a companion: a transient failure must not fail the primary's task (whose
    retry would not cover the companion), so the companion is queued again on its own."""
    try:
        return _guard(work.document.pk, step, claim=work.claim)
    except Exception:  # noqa: BLE001 - _guard re-raises transient failures only
        _requeue_alone(work)
        return False


def _requeue_alone(work: _Work) -> None:
    """Give a companion back to the queue under a new task id, counted as an interruption:
    it will not travel in a group again, and a file that keeps failing still ends failed
    (RAG_INGEST_MAX_ATTEMPTS)."""
    task_id = str(uuid.uuid4())
    updated = Document.objects.filter(pk=work.document.pk, task_id=work.claim).update(
        status=DocumentStatus.QUEUED,
        progress=0,
        task_id=task_id,
        heartbeat_at=None,
        updated_at=Now(),
        interruptions=F("interruptions") + 1,
    )
    if updated:
        _send_on_commit(work.document.pk, task_id)


def _embed_and_store_group(group: list[_Work]) -> bool:
    """Embed the group's chunks in shared batches, then store each document in its own
    transaction, the primary (group[0], whose task reports the outcome) last. True when the
    primary is ready."""
    primary, companions = group[0], group[1:]
    kb, claim = primary.document.knowledge_base, primary.claim
    progress = _Progress([w.document.pk for w in group], claim)
    progress.set(50, status=DocumentStatus.EMBEDDING)
    t0 = time.perf_counter()
    try:
        # Whole batches: a group of small files is a few seconds of work, and batches of
        # 8 (embed_drafts' default for this size, for progress) gave away half the gain.
        vectors = embed_drafts(
            kb,
            [d for w in group for d in w.drafts],
            progress=lambda f: progress.set(50 + 45 * f),
            batch=EMBED_BATCH,
        )
    except Exception:  # noqa: BLE001 - which file caused it is unknown: each runs alone
        logger.warning("embedding a group of %s documents failed", len(group), exc_info=True)
        for companion in companions:
            _requeue_alone(companion)
        return _guard(primary.document.pk, lambda: _embed_and_store(primary), claim=claim)
    parts = _split_vectors(group, vectors, time.perf_counter() - t0)
    for companion in companions:
        _companion_step(companion, lambda c=companion: _store(c, parts[c.document.pk]))
    mine = parts[primary.document.pk]
    return _guard(primary.document.pk, lambda: _store(primary, mine), claim=claim)


def _split_vectors(
    group: list[_Work], vectors: dict[str, np.ndarray], elapsed: float
) -> dict[int, dict[str, np.ndarray]]:
    """Each document's rows of the group's vectors (in the order its drafts were given), and
    its share of the embedding time in its timings."""
    total = sum(_children(w) for w in group) or 1
    parts, offset = {}, 0
    for work in group:
        n = _children(work)
        work.timings["embed"] = elapsed * n / total
        parts[work.document.pk] = {
            name: matrix[offset : offset + n] for name, matrix in vectors.items()
        }
        offset += n
    return parts


def documents_ingest_batch(*, document_ids: list[int], progress=None) -> dict[int, str]:
    """The same pipeline for many small documents of one knowledge base at once: the
    embedder sees large batches across documents instead of one small batch per document.
    Used by `evaluate` and `bench_ingest`; per-document failures stay per document."""
    claim = f"local-{uuid.uuid4()}"
    claimed: list[int] = []  # the heartbeat thread keeps these alive while the batch runs
    with _Heartbeat(claim, claimed):
        return _ingest_batch(document_ids, claim, claimed, progress)


def _ingest_batch(
    document_ids: list[int], claim: str, claimed: list[int], progress
) -> dict[int, str]:
    results: dict[int, str] = {}
    works: list[_Work] = []
    for document_id in document_ids:
        work = _claim(document_id, claim=claim)
        if work is None:
            results[document_id] = _status_of(document_id)
            continue
        claimed.append(document_id)
        if _guard(document_id, lambda w=work: _parse_and_chunk(w), claim=claim):
            works.append(work)
        else:
            results[document_id] = _status_of(document_id)
        if progress:
            progress("parse", document_id)
    by_kb: dict[int, list[_Work]] = {}
    for work in works:
        by_kb.setdefault(work.document.knowledge_base_id, []).append(work)
    for group in by_kb.values():
        kb = group[0].document.knowledge_base
        t0 = time.perf_counter()
        vectors = embed_drafts(kb, [d for w in group for d in w.drafts])
        parts = _split_vectors(group, vectors, time.perf_counter() - t0)
        for work in group:
            pk = work.document.pk
            ok = _guard(pk, lambda w=work, p=parts[pk]: _store(w, p), claim=claim)
            results[pk] = DocumentStatus.READY if ok else _status_of(pk)
            if progress:
                progress("store", pk)
    return results


def document_fail(document_id: int, message: str, *, claim: str | None = None) -> None:
    """Mark it failed; with `claim`, only while that run still holds it."""
    rows = Document.objects.filter(pk=document_id)
    if claim is not None:
        rows = rows.filter(task_id=claim)
    rows.update(status=DocumentStatus.FAILED, error=message, progress=100)


EMBED_BATCH = 64
EMBED_PROGRESS_STEPS = 10


def embed_drafts(
    kb: KnowledgeBase,
    drafts: list[ChunkDraft],
    *,
    progress: Callable[[float], None] | None = None,
    batch: int | None = None,
) -> dict[str, np.ndarray]:
    """Vectors of the child chunks (parents are context, not searched), per embedder."""
    texts = [d.embed_text for d in drafts if not d.is_parent]
    out: dict[str, np.ndarray] = {}
    # By default at most EMBED_BATCH texts per call, and at least ~EMBED_PROGRESS_STEPS
    # calls, so that progress moves for a small document too (batches under 8 only add
    # per-call overhead).
    if batch is None:
        batch = max(8, min(EMBED_BATCH, -(-len(texts) // EMBED_PROGRESS_STEPS)))
    total = max(len(texts) * len(kb.embedders), 1)
    done = 0
    for name in kb.embedders:
        embedder = get_embedder(name)
        parts = []
        for start in range(0, len(texts), batch):
            parts.append(embedder.embed_documents(texts[start : start + batch]))
            done += len(texts[start : start + batch])
            if progress:
                progress(done / total)
        dim = embedder.dimension
        out[name] = np.vstack(parts) if parts else np.zeros((0, dim), dtype=np.float32)
    return out


def store_chunks(
    *,
    document_id: int,
    drafts: list[ChunkDraft],
    vectors: dict[str, np.ndarray],
    language: str,
    page_count: int | None,
    signature: str,
    stats: dict,
    timings: dict,
    claim: str | None = None,
) -> None:
    """Replace the document's chunks in one transaction (with `claim`: only if that run
    still holds the document, else ClaimLost)."""
    t_store = time.perf_counter()
    with transaction.atomic():
        document = Document.objects.select_for_update().get(pk=document_id)
        if claim is not None and document.task_id != claim:
            raise ClaimLost(document_id)
        kb_id = document.knowledge_base_id
        Chunk.objects.filter(document_id=document_id).delete()
        rows: list[Chunk] = []
        for ordinal, draft in enumerate(drafts):
            search_text = "" if draft.is_parent else segment(draft.embed_text)
            rows.append(
                Chunk(
                    document_id=document_id,
                    knowledge_base_id=kb_id,
                    ordinal=ordinal,
                    text=draft.text,
                    token_count=draft.token_count,
                    heading_path=draft.heading_path,
                    page=draft.page,
                    page_end=draft.page_end,
                    sheet=draft.sheet[:200],
                    slide=draft.slide,
                    kind=draft.kind,
                    language=language,
                    is_parent=draft.is_parent,
                    search_text=search_text,
                    search_length=len(search_text.split()),
                    # Written with the row: a second UPDATE for it rewrote every chunk row
                    # (and its index entries) once more.
                    search_vector=None
                    if draft.is_parent
                    else SearchVector(Value(search_text), config=TS_CONFIG),
                )
            )
        # Parents (and chunks without one) first, so that each child is inserted with its
        # parent's id: linking them afterwards was one more UPDATE of every child row.
        # (Parents have no parent themselves: ingestion.chunking.)
        linked = [
            (row, d) for row, d in zip(rows, drafts, strict=True) if d.parent_index is not None
        ]
        Chunk.objects.bulk_create(
            [row for row, d in zip(rows, drafts, strict=True) if d.parent_index is None],
            batch_size=500,
        )
        for row, draft in linked:
            row.parent_id = rows[draft.parent_index].pk
        Chunk.objects.bulk_create([row for row, _ in linked], batch_size=500)
        children = [row for row, draft in zip(rows, drafts, strict=True) if not draft.is_parent]
        embeddings = [
            ChunkEmbedding(chunk=row, knowledge_base_id=kb_id, embedder=name, embedding=vec)
            for name, matrix in vectors.items()
            for row, vec in zip(children, matrix, strict=True)
        ]
        ChunkEmbedding.objects.bulk_create(embeddings, batch_size=500)
        timings["store"] = time.perf_counter() - t_store
        document.status = DocumentStatus.READY
        document.progress = 100
        document.error = ""
        document.language = language
        document.page_count = page_count
        document.ingest_signature = signature
        document.stats = {**stats, "seconds": {k: round(v, 3) for k, v in timings.items()}}
        document.save()


def rerank_embedders_for(kb: KnowledgeBase) -> list[str]:
    """The second-stage embedders (RAG_RERANK_EMBEDDERS) this knowledge base's chunks get
    after ingestion: not one it already recalls with, and only where it can run."""
    return [
        name
        for name in settings.RAG_RERANK_EMBEDDERS
        if name not in kb.embedders and embedder_available(name)
    ]


# Below every ingestion message: Redis consumes a queue's priority lists in order (kombu's
# priority_steps, 0 first), so a worker takes these only when no document waits.
RERANK_EMBEDDING_PRIORITY = 9


def queue_rerank_embedding(kb: KnowledgeBase, document_ids: list[int]) -> None:
    """After the transaction: the ready ones of these documents get the second-stage
    vectors they lack (ingestion.tasks.embed_for_rerank)."""
    if not rerank_embedders_for(kb):
        return
    from ingestion.tasks import embed_for_rerank

    ready = Document.objects.filter(pk__in=document_ids, status=DocumentStatus.READY)
    for pk in ready.values_list("pk", flat=True):
        transaction.on_commit(
            lambda pk=pk: embed_for_rerank.apply_async((pk,), priority=RERANK_EMBEDDING_PRIORITY)
        )


def document_embed_for_rerank(*, document_id: int) -> int:
    """Give a ready document's chunks the second-stage embedders' vectors they lack; the
    number of vectors added. Idempotent: a retry or a repeated message adds nothing twice,
    and a document re-ingested or deleted meanwhile only gets vectors for chunks it still
    has (its row is locked as store_chunks locks it before replacing them)."""
    document = Document.objects.filter(pk=document_id, status=DocumentStatus.READY).first()
    if document is None:
        return 0
    added = 0
    for name in rerank_embedders_for(document.knowledge_base):
        missing = list(
            Chunk.objects.filter(document_id=document_id, is_parent=False)
            .exclude(embeddings__embedder=name)
            .order_by("ordinal")
        )
        embedder = get_embedder(name)
        for start in range(0, len(missing), EMBED_BATCH):
            part = missing[start : start + EMBED_BATCH]
            vectors = embedder.embed_documents([c.embed_text for c in part])
            with transaction.atomic():
                if not Document.objects.select_for_update().filter(pk=document_id).exists():
                    return added
                alive = set(
                    Chunk.objects.filter(pk__in=[c.pk for c in part]).values_list("pk", flat=True)
                )
                rows = ChunkEmbedding.objects.bulk_create(
                    [
                        ChunkEmbedding(
                            chunk_id=c.pk,
                            knowledge_base_id=document.knowledge_base_id,
                            embedder=name,
                            embedding=v,
                        )
                        for c, v in zip(part, vectors, strict=True)
                        if c.pk in alive
                    ],
                    ignore_conflicts=True,
                )
            added += len(rows)
    return added


def documents_embed_for_rerank(*, document_ids: Iterable[int], progress=None) -> int:
    """document_embed_for_rerank in this process, for in-process ingestion (evaluate,
    benchmarks): what a worker does in the background after `ready`."""
    added = 0
    for document_id in document_ids:
        added += document_embed_for_rerank(document_id=document_id)
        if progress:
            progress(document_id)
    return added


def knowledge_base_reembed(*, knowledge_base: KnowledgeBase, progress=None) -> int:
    """Re-embed every ready chunk of a knowledge base with its current embedders."""
    count = 0
    names = list(knowledge_base.embedders)
    documents = knowledge_base.documents.filter(status=DocumentStatus.READY)
    for document in documents.iterator():
        children = list(
            Chunk.objects.filter(document=document, is_parent=False).order_by("ordinal")
        )
        texts = [c.embed_text for c in children]
        vectors = {name: get_embedder(name).embed_documents(texts) for name in names}
        with transaction.atomic():
            # The second-stage vectors stay: same chunks, same texts.
            ChunkEmbedding.objects.filter(chunk__document=document).exclude(
                embedder__in=rerank_embedders_for(knowledge_base)
            ).delete()
            ChunkEmbedding.objects.bulk_create(
                [
                    ChunkEmbedding(
                        chunk=c, knowledge_base=knowledge_base, embedder=name, embedding=v
                    )
                    for name in names
                    for c, v in zip(children, vectors[name], strict=True)
                ],
                batch_size=500,
            )
            signature = ingest_signature(knowledge_base, document)
            Document.objects.filter(pk=document.pk).update(ingest_signature=signature)
        count += len(children)
        if progress:
            progress(document)
    return count
