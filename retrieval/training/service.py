"""Adapting the second stage to one knowledge base: the service behind
`manage.py train_reranker --kb NAME` and the Celery task `retrieval.tasks.train_kb_reranker`.

Train on the knowledge base's own sections, QA pairs and feedback only; compare with the
model in use on held-out queries; activate (KnowledgeBase.reranker = KB_RERANKER) only if
the new one is better. `reranker_deactivate` switches back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from retrieval.models import RerankerModel, TrainingStatus
from retrieval.second_stage import DEFAULT_MODEL, LinearRanker
from retrieval.training.pairs import (
    feedback_queries,
    label_rows,
    qa_pair_queries,
    weak_queries_from_knowledge_base,
)
from retrieval.training.ranker import by_language, fit_language_models

# The RAG_RERANKERS entry that serves each knowledge base its own active model.
KB_RERANKER = "kb"
# A new model must beat the one in use by this much held-out nDCG@10: below it the
# difference on a few dozen queries is noise, and switching has a cost (new behaviour).
MIN_GAIN = 0.005
MODEL_FILE = "ranker.json"


def current_ranker(knowledge_base) -> tuple[LinearRanker, str]:
    active = RerankerModel.objects.active_for(knowledge_base.pk)
    if active is not None:
        return LinearRanker.load(Path(active.path) / MODEL_FILE), active.path
    return LinearRanker.load(DEFAULT_MODEL), "default"


def _held_out_ndcg(metrics: dict, key: str) -> float:
    total = sum(m["queries"]["held_out"] for m in metrics.values()) or 1
    return sum(m[key]["ndcg@10"] * m["queries"]["held_out"] for m in metrics.values()) / total


def reranker_train(
    *,
    knowledge_base,
    max_queries: int = 400,
    steps: int = 300,
    activate: bool = True,
    output: str | Path | None = None,
    feedback: Iterable | None = None,
    run: RerankerModel | None = None,
    progress: Callable[[int, str], None] | None = None,
    seed: int = 0,
) -> RerankerModel:
    """Train, compare on held-out queries, and activate only if better."""
    if run is None:
        run = RerankerModel.objects.create(knowledge_base=knowledge_base)

    def report(percent: int, message: str) -> None:
        RerankerModel.objects.filter(pk=run.pk).update(progress=percent, message=message)
        if progress is not None:
            progress(percent, message)

    t0 = time.perf_counter()
    base, base_name = current_ranker(knowledge_base)
    run.status, run.base = TrainingStatus.TRAINING, base_name
    run.save(update_fields=["status", "base", "updated_at"])
    try:
        queries = [
            *qa_pair_queries(knowledge_base),
            *feedback_queries(feedback or []),
        ]
        queries += weak_queries_from_knowledge_base(
            knowledge_base, limit=max(max_queries - len(queries), 0), seed=seed
        )
        if len(queries) < 10:
            raise ValueError(f"only {len(queries)} training queries: add documents or QA pairs")
        report(5, f"recalling candidates for {len(queries)} queries")
        rows = label_rows(
            knowledge_base,
            queries,
            progress=lambda i, n: (
                (i % 20 == 0 or i == n) and report(5 + 75 * i // n, f"recalled {i}/{n} queries")
            ),
        )
        report(80, "fitting")
        model, fitted = fit_language_models({"kb": rows}, seed=seed, base=base, steps=steps)
        metrics = fitted["metrics"]
        new, old = _held_out_ndcg(metrics, "trained"), _held_out_ndcg(metrics, "base")
        better = new >= old + MIN_GAIN
        folder = (
            Path(output)
            if output
            else (
                Path(settings.MEDIA_ROOT)
                / "rerankers"
                / f"kb-{knowledge_base.pk}-{timezone.now():%Y%m%d-%H%M%S}"
            )
        )
        card = {
            "kind": "linear ranker (retrieval.second_stage.LinearRanker)",
            "knowledge_base": knowledge_base.pk,
            "base": base_name,
            "data": {
                "queries": len(queries),
                "by_source": {
                    s: sum(q.source == s for q in queries) for s in ("weak", "qa", "feedback")
                },
                "languages": {k: len(v) for k, v in by_language(rows).items()},
            },
            "hyperparameters": fitted["hyperparameters"],
            "metrics_held_out": metrics,
            "held_out_ndcg@10": {"current": round(old, 4), "new": round(new, 4)},
            "better": better,
            "train_seconds": round(time.perf_counter() - t0, 1),
        }
        folder.mkdir(parents=True, exist_ok=True)
        type(model)(features=model.features, weights=model.weights, card=card).save(
            folder / MODEL_FILE
        )
        (folder / "card.json").write_text(json.dumps(card, indent=1, ensure_ascii=False), "utf-8")
        run.path, run.metrics, run.card, run.progress = str(folder), metrics, card, 100
        run.status = TrainingStatus.READY if better else TrainingStatus.REJECTED
        run.message = f"held-out nDCG@10 {old:.3f} -> {new:.3f}: " + (
            "better" if better else "not better; the current model stays"
        )
        run.save()
        if better and activate:
            reranker_activate(model=run)
    except Exception as exc:
        run.status, run.message = TrainingStatus.FAILED, str(exc)[:2000]
        run.save(update_fields=["status", "message", "updated_at"])
        raise
    run.refresh_from_db()
    return run


@transaction.atomic
def reranker_activate(*, model: RerankerModel) -> None:
    kb = type(model.knowledge_base).objects.select_for_update().get(pk=model.knowledge_base_id)
    previous = RerankerModel.objects.active_for(kb.pk)
    RerankerModel.objects.filter(knowledge_base=kb, is_active=True).update(is_active=False)
    model.previous_reranker = previous.previous_reranker if previous else kb.reranker
    model.is_active = True
    model.save(update_fields=["is_active", "previous_reranker", "updated_at"])
    kb.reranker = KB_RERANKER
    kb.save(update_fields=["reranker", "updated_at"])


@transaction.atomic
def reranker_deactivate(*, knowledge_base) -> None:
    """Switch back to what the knowledge base used before its trained models."""
    kb = type(knowledge_base).objects.select_for_update().get(pk=knowledge_base.pk)
    active = RerankerModel.objects.active_for(kb.pk)
    if active is None:
        return
    RerankerModel.objects.filter(pk=active.pk).update(is_active=False)
    kb.reranker = active.previous_reranker
    kb.save(update_fields=["reranker", "updated_at"])


def models_of(knowledge_base) -> Sequence[RerankerModel]:
    return list(RerankerModel.objects.filter(knowledge_base=knowledge_base))
