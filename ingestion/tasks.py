import logging
import os
import threading
import time

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from ingestion.services import (
    RERANK_EMBEDDING_PRIORITY,
    TransientIngestError,
    document_embed_for_rerank,
    document_fail,
    document_ingest,
    documents_requeue_stale,
)

logger = logging.getLogger(__name__)


class IngestTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # Retries exhausted (or an error escaped the service): the user must see it, unless
        # the document has been queued again since (then it is no longer this task's).
        if args:
            document_fail(
                args[0],
                f"ingestion gave up after retries: {type(exc).__name__}: {exc}",
                claim=task_id,
            )


def _transient_errors() -> tuple[type[BaseException], ...]:
    from django.db import InterfaceError, OperationalError

    from ingestion.parsing import TransientParseError

    return (TransientIngestError, TransientParseError, OperationalError, InterfaceError)


@shared_task(
    name="ingestion.tasks.ingest_document",
    base=IngestTask,
    bind=True,
    # Idempotent (see document_ingest), so it is safe to ack late: a worker killed mid-way
    # leaves the message to be redelivered, and the re-run replaces the chunks atomically.
    # The redelivery comes only after the broker's visibility timeout; well before that the
    # stale-claim sweep (start_stale_sweeper) has queued the document under a new task id,
    # and the old message, superseded, is then a no-op (services._claim).
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=_transient_errors(),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=5,
    soft_time_limit=settings.RAG_INGEST_SOFT_TIME_LIMIT,
    time_limit=settings.RAG_INGEST_SOFT_TIME_LIMIT + 120,
)
def ingest_document(self, document_id: int) -> str:
    status = document_ingest(
        document_id=document_id,
        task_id=self.request.id,
        batch=settings.RAG_INGEST_BATCH_DOCUMENTS,
    )
    if status == "ready":  # the knowledge base's regression suite runs (debounced)
        from curation.cases import regression_after_ingest

        regression_after_ingest(document_id=document_id)
    return status


@shared_task(
    name="ingestion.tasks.embed_for_rerank",
    # Idempotent (document_embed_for_rerank adds only missing vectors): safe to ack late
    # and to retry. Sent with the lowest priority, after every queued document.
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=_transient_errors(),
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=5,
    soft_time_limit=settings.RAG_INGEST_SOFT_TIME_LIMIT,
    time_limit=settings.RAG_INGEST_SOFT_TIME_LIMIT + 120,
)
def embed_for_rerank(document_id: int) -> int:
    try:
        return document_embed_for_rerank(document_id=document_id)
    except SoftTimeLimitExceeded:
        # A very long document: the batches stored so far stay, and the next message goes
        # on from the first chunk without a vector.
        embed_for_rerank.apply_async((document_id,), priority=RERANK_EMBEDDING_PRIORITY)
        return -1


@shared_task(name="ingestion.tasks.requeue_stale_documents")
def requeue_stale_documents() -> dict:
    """The sweep as a task too, for deployments that prefer to schedule it with beat."""
    result = documents_requeue_stale()
    return {"requeued": result.requeued, "failed": result.failed}


def share_cores_between_processes(sender=None, **kwargs) -> None:
    """On worker_init, in a prefork worker's main process before its pool forks: each of the
    N pool processes gets cores / N math-library threads (OMP_NUM_THREADS, which torch and
    the BLAS libraries read when a child first imports them). By default every child would
    start one thread per core: two children on two cores ran four torch threads that spun
    against each other, and a batch of small files went at 0.41 of the embedders' own
    speed instead of 0.81 (manage.py bench_batch). A value set by the operator is kept."""
    pool = getattr(sender, "pool_cls", None)
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "") or ""
    concurrency = getattr(sender, "concurrency", None)
    if not ("prefork" in name or name == "processes") or not isinstance(concurrency, int):
        return
    if concurrency > 1:
        threads = max(1, (os.cpu_count() or 1) // concurrency)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def start_stale_sweeper(**kwargs) -> None:
    """On worker_ready: sweep now (this covers restarting a worker after a crash), then every
    RAG_INGEST_SWEEP_SECONDS. A thread rather than a timer in the worker's event loop: a solo
    worker busy with a long document still sweeps, and no beat process is needed."""
    interval = settings.RAG_INGEST_SWEEP_SECONDS
    if interval <= 0:
        return
    threading.Thread(
        target=_sweep_forever, args=(interval,), name="ingest-stale-sweep", daemon=True
    ).start()


def _sweep_forever(interval: float) -> None:
    from django.db import close_old_connections, connection

    while True:
        close_old_connections()
        try:
            documents_requeue_stale()
        except Exception:  # noqa: BLE001 - e.g. the database restarting; try again next time
            logger.exception("stale-document sweep failed")
            connection.close()
        time.sleep(interval)
