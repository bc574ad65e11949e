"""Celery tasks of curation: thin wrappers around services."""

from __future__ import annotations

from celery import shared_task
from django.db import transaction

from curation.gaps import gap_recheck, gaps_refresh, recheck_ready
from curation.models import Gap
from ingestion.models import KnowledgeBase

# A document uploaded from a gap page is asked again once it is ingested: poll for up to
# about an hour (ingestion queues can be long), then give up; "Recheck" on the page retries.
RECHECK_POLL_SECONDS = 30
RECHECK_POLLS = 120


@shared_task
def refresh_gaps(knowledge_base_id: int) -> int:
    kb = KnowledgeBase.objects.filter(pk=knowledge_base_id).first()
    if kb is None:
        return 0
    return gaps_refresh(knowledge_base=kb).filed


@shared_task(bind=True, max_retries=RECHECK_POLLS)
def recheck_gap(self, gap_id: int) -> dict:
    gap = Gap.objects.select_related("knowledge_base", "document").filter(pk=gap_id).first()
    if gap is None:
        return {}
    if not recheck_ready(gap):
        raise self.retry(countdown=RECHECK_POLL_SECONDS)
    return gap_recheck(gap=gap)


def recheck_enqueue(gap: Gap) -> None:
    transaction.on_commit(lambda: recheck_gap.delay(gap.pk))


@shared_task(name="curation.tasks.run_regression")
def run_regression(run_id: int) -> str:
    """Run a queued regression run (curation.cases.regression_run). On the default queue,
    which the ingestion worker serves: a run is a few searches per case, so it must not wait
    behind a reranker training run on the training queue."""
    from curation.cases import regression_run
    from curation.models import RegressionRun

    queued = RegressionRun.objects.filter(pk=run_id, status=RegressionRun.Status.QUEUED)
    # Claimed by one update, so a redelivered message cannot run it twice.
    if not queued.update(status=RegressionRun.Status.RUNNING):
        return "skipped"  # deleted with its knowledge base, or already run
    run = RegressionRun.objects.select_related("knowledge_base").get(pk=run_id)
    return regression_run(knowledge_base=run.knowledge_base, trigger=run.trigger, run=run).status


def enqueue_regression(*, knowledge_base, trigger: str, changed=None):
    """The one call each hook makes (re-ingestion, chunk edits, reranker adaptation, settings
    changes): queue a regression run, debounced (see curation.cases.regression_enqueue). The
    change itself is done: a failure to queue is logged, not raised."""
    import logging

    from curation.cases import regression_enqueue

    try:
        return regression_enqueue(knowledge_base=knowledge_base, trigger=trigger, changed=changed)
    except Exception:  # noqa: BLE001
        logging.getLogger(__name__).exception("could not queue a regression run (%s)", trigger)
        return None
