"""Celery tasks of the retrieval app: thin wrappers around services."""

from __future__ import annotations

from celery import shared_task

from ingestion.models import KnowledgeBase
from retrieval.models import RerankerModel, TrainingStatus
from retrieval.training.service import reranker_train


def reranker_train_enqueue(*, knowledge_base, base: str = "current") -> RerankerModel:
    """Create the run row (the UI polls its progress) and start the task after commit."""
    from django.db import transaction

    run = RerankerModel.objects.create(knowledge_base=knowledge_base, base=base)
    transaction.on_commit(lambda: train_kb_reranker.delay(knowledge_base.pk, run.pk, base))
    return run


@shared_task(acks_late=True)
def train_kb_reranker(
    knowledge_base_id: int, run_id: int | None = None, base: str = "current"
) -> int:
    """Train this knowledge base's reranker; progress and outcome land on the run row."""
    kb = KnowledgeBase.objects.get(pk=knowledge_base_id)
    run = RerankerModel.objects.filter(pk=run_id, knowledge_base=kb).first() if run_id else None
    if run is not None and run.status != TrainingStatus.QUEUED:
        return run.pk  # redelivered after it already started or finished
    return reranker_train(knowledge_base=kb, run=run, base=base).pk
