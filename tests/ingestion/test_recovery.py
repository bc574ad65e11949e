"""A document whose worker dies mid-way is picked up again (heartbeat + stale-claim sweep)
and ends ready or failed, with one set of chunks; stale or duplicate messages are no-ops."""

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from ingestion.models import Chunk, ChunkEmbedding, Document, DocumentStatus
from ingestion.services import (
    ClaimLost,
    StaleSweep,
    document_create,
    document_ingest,
    documents_requeue_stale,
    store_chunks,
)
from tests.conftest import ROOT, wait_for_documents

HASHING = {"BACKEND": "retrieval.embedders.HashingEmbedder", "DIMENSION": 64, "OPTIONS": {}}


@pytest.fixture
def kb(make_user, make_kb, settings):
    settings.RAG_EMBEDDERS = {**settings.RAG_EMBEDDERS, "hash": HASHING}
    return make_kb(make_user("owner"), "docs", embedders=["hash"])


def _document(kb, name="a.txt", text="Indexes make lookups fast.\n\nVacuum reclaims space."):
    return document_create(
        knowledge_base=kb, fileobj=io.BytesIO(text.encode()), name=name, enqueue=False
    ).document


def _held(document, *, status=DocumentStatus.EMBEDDING, beat_ago=None, task_id="task-1"):
    """The document as a worker leaves it: claimed, mid-way, last heartbeat `beat_ago`."""
    Document.objects.filter(pk=document.pk).update(
        status=status,
        progress=50,
        task_id=task_id,
        heartbeat_at=None if beat_ago is None else timezone.now() - beat_ago,
    )


# --- the sweep and the claim, in-process -------------------------------------------------


@pytest.mark.django_db
def test_sweep_requeues_documents_whose_worker_stopped_beating(
    kb, django_capture_on_commit_callbacks
):
    dead = _document(kb, "dead.txt", "dead worker")
    alive = _document(kb, "alive.txt", "live worker")
    waiting = _document(kb, "waiting.txt", "queued for long")
    legacy = _document(kb, "legacy.txt", "claimed before heartbeats existed")
    _held(dead, beat_ago=timedelta(minutes=10))
    _held(alive, beat_ago=timedelta(seconds=5))
    Document.objects.filter(pk=waiting.pk).update(updated_at=timezone.now() - timedelta(days=1))
    _held(legacy, status=DocumentStatus.PARSING)
    Document.objects.filter(pk=legacy.pk).update(updated_at=timezone.now() - timedelta(hours=1))

    with django_capture_on_commit_callbacks(execute=False) as sends:
        swept = documents_requeue_stale()

    assert sorted(swept.requeued) == sorted([dead.pk, legacy.pk]) and not swept.failed
    assert len(sends) == 2  # one new task each, sent once the transaction commits
    dead.refresh_from_db()
    assert dead.status == DocumentStatus.QUEUED and dead.interruptions == 1
    assert dead.task_id not in ("", "task-1")  # the old message is superseded
    assert Document.objects.get(pk=alive.pk).status == DocumentStatus.EMBEDDING
    assert Document.objects.get(pk=waiting.pk).status == DocumentStatus.QUEUED
    # A second sweep (another worker's) finds nothing left to queue.
    assert documents_requeue_stale() == StaleSweep(requeued=[], failed=[])


@pytest.mark.django_db
def test_a_document_interrupted_max_attempts_times_fails(kb, settings):
    settings.RAG_INGEST_MAX_ATTEMPTS = 3
    document = _document(kb)
    _held(document, beat_ago=timedelta(minutes=10))
    Document.objects.filter(pk=document.pk).update(interruptions=2)

    swept = documents_requeue_stale()

    document.refresh_from_db()
    assert swept.failed == [document.pk] and not swept.requeued
    assert document.status == DocumentStatus.FAILED
    assert "interrupted 3 times" in document.error


@pytest.mark.django_db
def test_a_superseded_or_duplicate_message_is_a_noop(kb):
    document = _document(kb)
    # Queued again (sweep, retry) under a new task id: the old message must not run.
    Document.objects.filter(pk=document.pk).update(task_id="new-task")
    assert document_ingest(document_id=document.pk, task_id="old-task") == DocumentStatus.QUEUED
    # The same task delivered twice while its first run is alive (fresh heartbeat).
    _held(document, beat_ago=timedelta(seconds=1), task_id="new-task")
    assert document_ingest(document_id=document.pk, task_id="new-task") == DocumentStatus.EMBEDDING
    assert not Chunk.objects.filter(document=document).exists()

    # Once the first run's heartbeat is stale, the redelivered message runs it to the end.
    _held(document, beat_ago=timedelta(minutes=10), task_id="new-task")
    assert document_ingest(document_id=document.pk, task_id="new-task") == DocumentStatus.READY
    chunks = Chunk.objects.filter(document=document).count()
    assert chunks > 0
    # After that, the same message once more changes nothing.
    assert document_ingest(document_id=document.pk, task_id="new-task") == DocumentStatus.READY
    assert Chunk.objects.filter(document=document).count() == chunks


@pytest.mark.django_db
def test_a_run_that_lost_its_claim_does_not_store_chunks(kb):
    document = _document(kb)
    _held(document, task_id="the-new-run")
    with pytest.raises(ClaimLost):
        store_chunks(
            document_id=document.pk,
            drafts=[],
            vectors={},
            language="en",
            page_count=None,
            signature="x",
            stats={},
            timings={},
            claim="the-old-run",
        )
    assert Document.objects.get(pk=document.pk).status == DocumentStatus.EMBEDDING


# --- a real worker killed in the middle of a document ------------------------------------


def _start_worker(name: str, log_path, **env_extra) -> subprocess.Popen:
    from django.db import connection

    from tests.settings_recovery import RECOVERY_QUEUE

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings_recovery",
        RAG_TEST_DATABASE_NAME=connection.settings_dict["NAME"],
        # Seconds instead of minutes, so that the test waits seconds.
        RAG_INGEST_HEARTBEAT_SECONDS="0.5",
        RAG_INGEST_STALE_SECONDS="3",
        RAG_INGEST_SWEEP_SECONDS="0.5",
    )
    env.update(env_extra)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "ragapp",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "1",
                "--loglevel",
                "INFO",
                "-Q",
                RECOVERY_QUEUE,
                "--hostname",
                f"{name}-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_until(condition, timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} in {timeout}s")
        time.sleep(0.1)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_document_whose_worker_is_killed_is_picked_up_again_and_ends_ready(
    make_user, make_kb, tmp_path
):
    from ingestion.tasks import ingest_document
    from tests.settings_recovery import RECOVERY_QUEUE

    kb = make_kb(make_user("owner"), "docs", embedders=["slow"])
    text = "\n\n".join(f"Paragraph {i} explains index number {i} in detail." for i in range(300))
    document = _document(kb, "long.txt", text)
    first_task = str(uuid.uuid4())
    Document.objects.filter(pk=document.pk).update(task_id=first_task)  # as document_enqueue
    ingest_document.apply_async((document.pk,), task_id=first_task, queue=RECOVERY_QUEUE)

    def status():
        return Document.objects.get(pk=document.pk).status

    log = tmp_path / "workers.log"
    doomed = _start_worker("doomed", log, RAG_TEST_EMBED_PAUSE="600")
    rescuer = None
    try:
        _wait_until(lambda: status() == DocumentStatus.EMBEDDING, 60, "embedding", doomed)
        # Embedding sits in one long call without progress: only the heartbeat thread shows
        # the run is alive, and the worker's own sweep must leave it alone.
        time.sleep(5)
        held = Document.objects.get(pk=document.pk)
        assert (held.status, held.task_id) == (DocumentStatus.EMBEDDING, first_task)

        os.kill(doomed.pid, signal.SIGKILL)  # the Celery main process, as in the report
        doomed.wait()
        try:
            os.killpg(doomed.pid, signal.SIGKILL)  # its pool child too, if it outlived it
        except ProcessLookupError:
            pass  # billiard's child dies with its parent (as in the report: stuck at 50%)
        assert status() == DocumentStatus.EMBEDDING

        rescuer = _start_worker("rescuer", log)
        docs = wait_for_documents([document.pk], timeout=60)
        recovered = docs[document.pk]
        assert recovered.status == DocumentStatus.READY, recovered.error
        assert recovered.interruptions == 1 and recovered.task_id != first_task

        chunks = Chunk.objects.filter(document=document)
        ordinals = list(chunks.values_list("ordinal", flat=True))
        assert ordinals and sorted(ordinals) == list(range(len(ordinals)))
        children = chunks.filter(is_parent=False).count()
        vectors = ChunkEmbedding.objects.filter(chunk__document=document)
        recall_vectors = vectors.filter(embedder__in=document.knowledge_base.embedders)
        assert recall_vectors.count() == children * len(document.knowledge_base.embedders)

        # The original message comes back once the broker's visibility timeout passes: a
        # no-op on the finished document.
        ids_before = set(chunks.values_list("pk", flat=True))
        late = ingest_document.apply_async((document.pk,), task_id=first_task, queue=RECOVERY_QUEUE)
        assert late.get(timeout=30) == DocumentStatus.READY
        assert set(chunks.values_list("pk", flat=True)) == ids_before
    finally:
        for proc in (doomed, rescuer):
            if proc is not None:
                _stop(proc)
