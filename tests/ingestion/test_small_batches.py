"""Small documents travel together: the worker that takes a small queued document also claims
other queued small files of its knowledge base and embeds them in shared batches. Each still
ends with exactly its own chunks and vectors, fails alone, and its own queue message becomes
a no-op."""

import io

import numpy as np
import pytest
from django.db import OperationalError
from psycopg import errors

from ingestion.models import Chunk, ChunkEmbedding, Document, DocumentStatus
from ingestion.services import (
    TransientIngestError,
    _claim,
    _guard,
    document_create,
    document_enqueue,
    document_ingest,
)
from retrieval.backends import get_embedder
from retrieval.embedders import HashingEmbedder

POISON = "POISONED-BATCH"


class PoisonEmbedder(HashingEmbedder):
    """The hashing embedder, failing on any batch that holds a text with POISON in it."""

    calls: list[int] = []

    def embed_documents(self, texts):
        PoisonEmbedder.calls.append(len(texts))
        if any(POISON in t for t in texts):
            raise RuntimeError("the model cannot embed this batch")
        return super().embed_documents(texts)


EMBEDDER = {"BACKEND": f"{__name__}.PoisonEmbedder", "DIMENSION": 64, "OPTIONS": {}}


@pytest.fixture
def kb(make_user, make_kb, settings):
    settings.RAG_EMBEDDERS = {**settings.RAG_EMBEDDERS, "poison": EMBEDDER}
    settings.RAG_RERANK_EMBEDDERS = []  # the tests count the messages ingestion sends
    PoisonEmbedder.calls.clear()
    return make_kb(make_user("owner"), "notes", embedders=["poison"])


def _note(i: int, *, words: str = "") -> str:
    return (
        f"Note {i} about topic{i}.\n\nThe first paragraph of note {i} says alpha{i} {words}."
        f"\n\nThe second paragraph of note {i} says beta{i}."
    )


def _queued(kb, name: str, text: str, capture) -> Document:
    """A document uploaded and queued; its message is captured, not sent."""
    document = document_create(
        knowledge_base=kb, fileobj=io.BytesIO(text.encode()), name=name, enqueue=False
    ).document
    with capture(execute=False):
        document_enqueue(document=document)
    document.refresh_from_db()
    return document


def _vectors_match_own_text(document) -> None:
    """Every chunk has one vector, the one its own text gets when embedded alone."""
    chunks = list(Chunk.objects.filter(document=document, is_parent=False).order_by("ordinal"))
    assert chunks
    embedder = get_embedder("poison")
    for chunk in chunks:
        rows = list(ChunkEmbedding.objects.filter(chunk=chunk))
        assert len(rows) == 1
        expected = embedder.embed_documents([chunk.embed_text])[0]
        assert np.allclose(np.asarray(rows[0].embedding), expected, atol=1e-6)
        assert chunk.search_vector  # the keyword column is written with the row
        assert str(chunk.search_vector).count(":") >= 3


@pytest.mark.django_db
def test_a_worker_embeds_queued_small_files_of_the_knowledge_base_together(
    kb, make_kb, django_capture_on_commit_callbacks
):
    notes = [
        _queued(kb, f"n{i}.txt", _note(i), django_capture_on_commit_callbacks) for i in range(6)
    ]
    other_kb = make_kb(kb.owner, "elsewhere", embedders=["poison"])
    stranger = _queued(other_kb, "x.txt", _note(99), django_capture_on_commit_callbacks)
    primary = notes[0]

    with django_capture_on_commit_callbacks(execute=False) as sends:
        status = document_ingest(document_id=primary.pk, task_id=primary.task_id, batch=16)

    assert status == DocumentStatus.READY and not sends
    # One model call for the six notes' chunks, not one per note.
    children = Chunk.objects.filter(knowledge_base=kb, is_parent=False).count()
    assert children >= 6 and PoisonEmbedder.calls == [children]
    for note in notes:
        note_row = Document.objects.get(pk=note.pk)
        assert note_row.status == DocumentStatus.READY, note_row.error
        _vectors_match_own_text(note_row)
        assert note_row.stats["seconds"]["embed"] >= 0
    # Another knowledge base's queue is not touched.
    assert Document.objects.get(pk=stranger.pk).status == DocumentStatus.QUEUED

    # A companion's own message arrives later: superseded, a no-op.
    before = sorted(Chunk.objects.filter(document=notes[3]).values_list("pk", flat=True))
    assert document_ingest(document_id=notes[3].pk, task_id=notes[3].task_id, batch=16) == (
        DocumentStatus.READY
    )
    assert sorted(Chunk.objects.filter(document=notes[3]).values_list("pk", flat=True)) == before


@pytest.mark.django_db
def test_the_group_has_limits(kb, settings, django_capture_on_commit_callbacks):
    settings.RAG_INGEST_BATCH_MAX_BYTES = 2000
    capture = django_capture_on_commit_callbacks
    primary = _queued(kb, "a.txt", _note(0), capture)
    large = _queued(kb, "large.txt", _note(1, words="filler " * 400), capture)
    interrupted = _queued(kb, "again.txt", _note(2), capture)
    Document.objects.filter(pk=interrupted.pk).update(interruptions=1)
    rest = [_queued(kb, f"n{i}.txt", _note(i), capture) for i in range(3, 8)]

    document_ingest(document_id=primary.pk, task_id=primary.task_id, batch=3)

    statuses = {d.pk: Document.objects.get(pk=d.pk).status for d in [large, interrupted, *rest]}
    assert statuses[large.pk] == statuses[interrupted.pk] == DocumentStatus.QUEUED
    # Two companions at most with batch=3, the oldest first.
    assert [statuses[d.pk] for d in rest] == [DocumentStatus.READY] * 2 + [
        DocumentStatus.QUEUED
    ] * 3

    # Without `batch` (tests, the in-process paths) a document runs alone.
    alone = rest[2]
    document_ingest(document_id=alone.pk, task_id=alone.task_id)
    assert [Document.objects.get(pk=d.pk).status for d in rest[3:]] == [DocumentStatus.QUEUED] * 2


@pytest.mark.django_db
def test_a_companion_that_cannot_be_read_fails_alone(kb, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    primary = _queued(kb, "a.txt", _note(0), capture)
    broken = _queued(kb, "broken.txt", "placeholder", capture)
    with broken.file.open("wb") as handle:  # the stored file lost its bytes since
        handle.write(b"")
    after = _queued(kb, "c.txt", _note(2), capture)

    document_ingest(document_id=primary.pk, task_id=primary.task_id, batch=16)

    broken.refresh_from_db()
    assert broken.status == DocumentStatus.FAILED and broken.error
    assert not Chunk.objects.filter(document=broken).exists()
    for document in (primary, after):
        row = Document.objects.get(pk=document.pk)
        assert row.status == DocumentStatus.READY
        _vectors_match_own_text(row)


@pytest.mark.django_db
def test_a_group_the_model_cannot_embed_is_taken_apart(kb, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    primary = _queued(kb, "a.txt", _note(0), capture)
    poisoned = _queued(kb, "p.txt", _note(1, words=POISON), capture)
    healthy = _queued(kb, "h.txt", _note(2), capture)

    with capture(execute=False) as sends:
        status = document_ingest(document_id=primary.pk, task_id=primary.task_id, batch=16)

    # The primary is embedded again alone and is ready; the companions go back to the
    # queue, each under a new task (two messages sent), to run alone.
    assert status == DocumentStatus.READY
    _vectors_match_own_text(Document.objects.get(pk=primary.pk))
    assert len(sends) == 2
    for companion in (poisoned, healthy):
        row = Document.objects.get(pk=companion.pk)
        assert row.status == DocumentStatus.QUEUED and row.interruptions == 1
        assert row.task_id != companion.task_id
        assert not Chunk.objects.filter(document=row).exists()

    # Alone, each ends on its own: the poisoned one failed with the model's message, the
    # healthy one ready; neither travels in a group again.
    for companion in (poisoned, healthy):
        row = Document.objects.get(pk=companion.pk)
        document_ingest(document_id=row.pk, task_id=row.task_id, batch=16)
    poisoned.refresh_from_db()
    assert poisoned.status == DocumentStatus.FAILED
    assert "cannot embed" in poisoned.error
    _vectors_match_own_text(Document.objects.get(pk=healthy.pk))


def _raised_from(cause: Exception):
    """A step failing as Django reports a psycopg error: OperationalError from the cause."""

    def step():
        try:
            raise cause
        except Exception as exc:
            raise OperationalError(str(exc)) from exc

    return step


@pytest.mark.django_db
def test_a_deadlock_queues_the_document_again_instead_of_failing_it(
    kb, django_capture_on_commit_callbacks
):
    document = _queued(kb, "a.txt", _note(0), django_capture_on_commit_callbacks)
    work = _claim(document.pk, task_id=document.task_id)

    with pytest.raises(TransientIngestError):  # the task's autoretry takes it from here
        _guard(
            document.pk,
            _raised_from(errors.DeadlockDetected("deadlock detected")),
            claim=work.claim,
        )
    document.refresh_from_db()
    assert document.status == DocumentStatus.QUEUED and not document.error

    # A database error that would come back on every retry fails the document at once.
    too_long = errors.ProgramLimitExceeded("string is too long for tsvector")
    assert not _guard(document.pk, _raised_from(too_long), claim=work.claim)
    document.refresh_from_db()
    assert document.status == DocumentStatus.FAILED and "too long" in document.error
