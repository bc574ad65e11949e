from celery import Task, shared_task
from django.conf import settings

from ingestion.services import TransientIngestError, document_fail, document_ingest


class IngestTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # Retries exhausted (or an error escaped the service): the user must see it.
        if args:
            document_fail(args[0], f"ingestion gave up after retries: {type(exc).__name__}: {exc}")


def _transient_errors() -> tuple[type[BaseException], ...]:
    from django.db import InterfaceError, OperationalError

    from ingestion.parsing import TransientParseError

    return (TransientIngestError, TransientParseError, OperationalError, InterfaceError)


@shared_task(
    name="ingestion.tasks.ingest_document",
    base=IngestTask,
    # Idempotent (see document_ingest), so it is safe to ack late: a worker killed mid-way
    # leaves the message to be redelivered, and the re-run replaces the chunks atomically.
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
def ingest_document(document_id: int) -> str:
    return document_ingest(document_id=document_id)
