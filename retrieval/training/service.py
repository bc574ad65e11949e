"""Adapting the second stage to one knowledge base: the service behind
`manage.py train_reranker --kb NAME` and the Celery task `retrieval.tasks.train_kb_reranker`.

Train on the knowledge base's own sections, QA pairs and feedback only; compare with the
model in use on held-out queries; activate (KnowledgeBase.reranker = KB_RERANKER) only if
the new one is better. `reranker_deactivate` switches back.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from retrieval.fusion import detect_query_language
from retrieval.models import RerankerModel, TrainingStatus
from retrieval.rerank.learned import MODEL_FILE, load_ranker
from retrieval.rerank.linear import DEFAULT_MODEL, LinearRanker
from retrieval.training.cross_encoder import CrossEncoderConfig
from retrieval.training.pairs import (
    TrainingQuery,
    feedback_queries,
    label_rows,
    qa_pair_queries,
    weak_queries_from_knowledge_base,
)
from retrieval.training.ranker import by_language, fit_language_models, ranking_metrics, split

# The RAG_RERANKERS entry that serves each knowledge base its own active model.
KB_RERANKER = "kb"
# A new model must beat the one in use by this much held-out nDCG@10: below it the
# difference on a few dozen queries is noise, and switching has a cost (new behaviour).
MIN_GAIN = 0.005


def current_ranker(knowledge_base) -> tuple[object, str]:
    active = RerankerModel.objects.active_for(knowledge_base.pk)
    if active is not None:
        return load_ranker(active.path), active.path
    return LinearRanker.load(DEFAULT_MODEL), "default"


def _held_out_ndcg(metrics: dict, key: str) -> float:
    total = sum(m["queries"]["held_out"] for m in metrics.values()) or 1
    return sum(m[key]["ndcg@10"] * m["queries"]["held_out"] for m in metrics.values()) / total


def training_queries(
    knowledge_base, *, max_queries: int, feedback: Iterable | None, seed: int
) -> list[TrainingQuery]:
    """QA pairs and chat feedback first, weak queries from the sections for the rest."""
    if feedback is None:
        # Chat owns the feedback; it reaches training through a setting, not an import
        # (retrieval never imports chat).
        feedback = import_string(settings.RAG_TRAINING_FEEDBACK)(knowledge_base=knowledge_base)
    queries = [*qa_pair_queries(knowledge_base), *feedback_queries(feedback)]
    queries += weak_queries_from_knowledge_base(
        knowledge_base, limit=max(max_queries - len(queries), 0), seed=seed
    )
    if len(queries) < 10:
        raise ValueError(f"only {len(queries)} training queries: add documents or QA pairs")
    return queries


def reranker_train(
    *,
    knowledge_base,
    max_queries: int = 400,
    steps: int = 300,
    base: str = "current",
    cross_encoder: CrossEncoderConfig | None = None,
    activate: bool = True,
    output: str | Path | None = None,
    feedback: Iterable | None = None,
    run: RerankerModel | None = None,
    progress: Callable[[int, str], None] | None = None,
    seed: int = 0,
) -> RerankerModel:
    """Train, compare with the model in use on held-out queries, activate only if better.

    base "current" adapts the linear ranker in use (seconds); any other value is a
    cross-encoder (hub name, local path or package:NAME) to fine-tune and put on top of it
    (minutes on a CPU; a GPU is used when present)."""
    if run is None:
        run = RerankerModel.objects.create(knowledge_base=knowledge_base)

    def report(percent: int, message: str) -> None:
        RerankerModel.objects.filter(pk=run.pk).update(progress=percent, message=message)
        if progress is not None:
            progress(percent, message)

    t0 = time.perf_counter()
    current, current_name = current_ranker(knowledge_base)
    run.status, run.base = TrainingStatus.TRAINING, current_name if base == "current" else base
    run.save(update_fields=["status", "base", "updated_at"])
    recall_share = 75 if base == "current" else 30
    try:
        queries = training_queries(
            knowledge_base, max_queries=max_queries, feedback=feedback, seed=seed
        )
        report(5, f"recalling candidates for {len(queries)} queries")
        rows = label_rows(
            knowledge_base,
            queries,
            progress=lambda i, n: (
                (i % 20 == 0 or i == n)
                and report(5 + recall_share * i // n, f"recalled {i}/{n} queries")
            ),
        )
        folder = (
            Path(output)
            if output
            else (
                Path(settings.MEDIA_ROOT)
                / "rerankers"
                / f"kb-{knowledge_base.pk}-{timezone.now():%Y%m%d-%H%M%S}"
            )
        )
        folder.mkdir(parents=True, exist_ok=True)
        if base == "current":
            report(80, "fitting")
            linear, fitted = fit_language_models({"kb": rows}, seed=seed, base=current, steps=steps)
            card = {"kind": "linear ranker (retrieval.rerank.linear.LinearRanker)"}
        else:
            linear, fitted, extra = _fit_cross_encoder(
                rows,
                base=base,
                current=current,
                config=cross_encoder or CrossEncoderConfig(),
                folder=folder,
                seed=seed,
                report=report,
                start=5 + recall_share,
            )
            card = {"kind": "cross-encoder on top of the linear ranker", **extra}
        metrics = fitted["metrics"]
        new, old = _held_out_ndcg(metrics, "trained"), _held_out_ndcg(metrics, "base")
        better = new >= old + MIN_GAIN
        card.update(
            {
                "knowledge_base": knowledge_base.pk,
                "base": run.base,
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
        )
        type(linear)(features=linear.features, weights=linear.weights, card=card).save(
            folder / MODEL_FILE
        )
        (folder / "card.json").write_text(json.dumps(card, indent=1, ensure_ascii=False), "utf-8")
        run.path, run.metrics, run.card, run.progress = str(folder), metrics, card, 100
        run.status = TrainingStatus.READY if better else TrainingStatus.REJECTED
        run.message = f"held-out nDCG@10 {old:.3f} -> {new:.3f}: " + (
            "better" if better else "not better; the current model stays"
        )
        # One transaction: a run is never seen ready and better but not yet switched on
        # (the page, and a test polling it, read between the two writes).
        with transaction.atomic():
            run.save()
            if better and activate:
                reranker_activate(model=run)
    except Exception as exc:
        run.status, run.message = TrainingStatus.FAILED, str(exc)[:2000]
        run.save(update_fields=["status", "message", "updated_at"])
        raise
    run.refresh_from_db()
    return run


def _fit_cross_encoder(rows, *, base, current, config, folder, seed, report, start):
    """Fine-tune `base` on 64% of the queries, pick its mixing weight on 16%, and measure
    everything on the held-out 20% that neither step saw."""
    from retrieval.training import cross_encoder as ce

    linear = current.linear if isinstance(current, ce.MixedRanker) else current
    train_rows, held_out = split(rows, seed=seed)
    fit_rows, tune_rows = split(train_rows, seed=seed + 1)
    groups = ce.training_groups(fit_rows, negatives=config.negatives, seed=seed)
    if len(groups) < 4:
        raise ValueError(f"only {len(groups)} training queries found their passage in recall")
    report(start, f"measuring {base} before training")
    import torch

    torch.manual_seed(seed)  # a base without a trained head starts from a random one
    untrained = ce.load_cross_encoder(base, max_length=config.max_length)
    plain = ce.MixedRanker(linear, untrained, top=config.top, only=True)
    before = {lang: ranking_metrics(r, plain) for lang, r in by_language(held_out).items()}
    held_out_groups = ce.training_groups(held_out, negatives=config.negatives, seed=seed)
    pairwise_before = ce.pairwise_accuracy(untrained, held_out_groups)
    del untrained, plain
    span = 90 - start - 5

    def step(i, total, loss):
        if i == total or i % 5 == 0:
            report(start + 5 + span * i // total, f"training step {i}/{total}, loss {loss:.3f}")

    t0 = time.perf_counter()
    model = ce.fine_tune(base, groups, config=config, seed=seed, progress=step)
    train_seconds = time.perf_counter() - t0
    report(90, "choosing the mixing weight")
    alpha = ce.best_alphas(tune_rows, linear, model, top=config.top)
    new = ce.MixedRanker(linear, model, alpha=alpha, top=config.top)
    only = ce.MixedRanker(linear, model, top=config.top, only=True)
    metrics = {}
    for lang, lang_rows in by_language(held_out).items():
        metrics[lang] = {
            "queries": {
                "train": sum((detect_query_language(r["query"]) or "en") == lang for r in fit_rows),
                "held_out": len(lang_rows),
            },
            "recall_order": ranking_metrics(lang_rows, None),
            "base": ranking_metrics(lang_rows, current),
            "cross_encoder_before": before[lang],
            "cross_encoder_after": ranking_metrics(lang_rows, only),
            "trained": ranking_metrics(lang_rows, new),
        }
    report(95, "saving")
    size_mb = ce.save(model, folder)
    hyper = {
        "loss": "multiple negatives ranking (softmax over 1 positive + hard negatives)",
        **dataclasses.asdict(config),
        **model.fit_info,
        "groups": len(groups),
        "held_out_pairwise_accuracy": {
            "before": pairwise_before,
            "after": ce.pairwise_accuracy(model, held_out_groups),
        },
        "tune_queries": len(tune_rows),
        "seed": seed,
    }
    extra = {
        "cross_encoder": {
            "base": base,
            "alpha": alpha,
            "top": config.top,
            "max_length": config.max_length,
            "size_mb": size_mb,
            "dtype": "float16",
            "fine_tune_seconds": round(train_seconds, 1),
        }
    }
    return linear, {"metrics": metrics, "hyperparameters": hyper}, extra


def _regression(kb) -> None:
    """A new ranker moves the ranking: queue the regression suite (sent after the commit)."""
    from curation.tasks import enqueue_regression

    enqueue_regression(knowledge_base=kb, trigger="reranker")


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
    _regression(kb)


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
    _regression(kb)


def models_of(knowledge_base) -> Sequence[RerankerModel]:
    return list(RerankerModel.objects.filter(knowledge_base=knowledge_base))
