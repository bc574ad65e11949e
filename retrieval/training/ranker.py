"""Fitting the feature ranker (retrieval.rerank.linear.LinearRanker) and measuring rankings.

A "row" is one query's first-stage result: {"query": str, "candidates": [Candidate],
"labels": [0/1 per candidate]}. The loss is listwise: -log of the softmax mass the model
puts on the relevant candidates, plus L2; full-batch Adam in numpy (a few seconds).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

import numpy as np

from retrieval.rerank.linear import FEATURES, LinearRanker, features, weights_key

L2 = 1e-3
STEPS = 400
LEARNING_RATE = 0.05
HOLD_OUT = 0.2


def _doc_order(candidates, labels, scores, unit: str = "document") -> list[int]:
    """Labels of the distinct documents (or chunks) in score order; a document is relevant
    if any of its chunks is."""
    order = sorted(range(len(candidates)), key=lambda i: (-scores[i], candidates[i].recall_rank))
    seen: dict[int, int] = {}
    for i in order:
        doc = candidates[i].document_id if unit == "document" else candidates[i].chunk_id
        seen[doc] = max(seen.get(doc, 0), labels[i]) if doc in seen else labels[i]
    # dict preserves first-appearance order; a document is relevant if any chunk is.
    return list(seen.values())


def query_metrics(
    candidates, labels, scores, k: int = 10, unit: str = "document"
) -> dict[str, float]:
    """nDCG/MRR/recall@k of one query. unit "document" judges documents (QA pairs, the
    FAQ-style benchmarks); "chunk" judges passages (weak queries and feedback know the
    passage: within a knowledge base of a few long documents that is what matters)."""
    docs = _doc_order(candidates, labels, scores, unit)
    n_relevant = max(sum(docs), 1)
    dcg = sum(rel / math.log2(i + 2) for i, rel in enumerate(docs[:k]))
    idcg = sum(1 / math.log2(i + 2) for i in range(min(n_relevant, k)))
    first = next((i for i, rel in enumerate(docs[:k]) if rel), None)
    return {
        "ndcg@10": dcg / idcg,
        "mrr@10": 0.0 if first is None else 1 / (first + 1),
        "recall@10": sum(docs[:k]) / n_relevant,
    }


def ranking_metrics(rows: Sequence[Mapping], model: LinearRanker | None) -> dict[str, float]:
    """Mean metrics over rows; model None = the first-stage (recall) order."""
    totals: dict[str, float] = {}
    for row in rows:
        candidates = row["candidates"]
        if model is None:
            scores = [-c.recall_rank for c in candidates]
        else:
            scores = list(model.scores(row["query"], candidates))
        unit = row.get("unit", "document")
        for key, value in query_metrics(candidates, row["labels"], scores, unit=unit).items():
            totals[key] = totals.get(key, 0.0) + value
    n = max(len(rows), 1)
    return {key: round(value / n, 4) for key, value in totals.items()}


def _matrices(rows):
    out = []
    for row in rows:
        labels = np.asarray(row["labels"], dtype=float)
        if labels.sum() == 0 or labels.sum() == len(labels):
            continue  # nothing to learn from this query's order
        out.append((features(row["query"], row["candidates"]), labels))
    return out


def fit_linear(
    rows: Sequence[Mapping],
    *,
    l2: float = L2,
    steps: int = STEPS,
    learning_rate: float = LEARNING_RATE,
    init: np.ndarray | None = None,
) -> np.ndarray:
    """Weights over FEATURES minimising the listwise loss on rows."""
    data = _matrices(rows)
    # L2 pulls towards the starting point: adapting a model keeps what it knew.
    anchor = np.zeros(len(FEATURES)) if init is None else np.array(init, dtype=float)
    w = anchor.copy()
    if not data:
        return w
    m, v = np.zeros_like(w), np.zeros_like(w)
    for step in range(1, steps + 1):
        grad = l2 * (w - anchor)
        for x, labels in data:
            s = x @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            q = p * labels
            q /= q.sum()
            grad += x.T @ (p - q) / len(data)
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w -= learning_rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return w


def split(rows: Sequence, *, seed: int, hold_out: float = HOLD_OUT) -> tuple[list, list]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    cut = max(1, int(len(rows) * hold_out)) if len(rows) > 1 else 0
    return rows[cut:], rows[:cut]


def by_language(rows: Sequence[Mapping]) -> dict[str, list]:
    """Rows by the weights that score them (linear.weights_key): the query's language, with
    the second-stage embedder when every candidate has its cosine."""
    out: dict[str, list] = {}
    for row in rows:
        out.setdefault(weights_key(row["query"], row["candidates"]), []).append(row)
    return out


def fit_language_models(
    rows_by_set: Mapping[str, Sequence[Mapping]],
    *,
    seed: int = 0,
    base: LinearRanker | None = None,
    l2: float = L2,
    steps: int = STEPS,
) -> tuple[LinearRanker, dict]:
    """One weight vector per query language, trained on every set's queries of that
    language; metrics are on held-out queries before the final fit on everything.

    With `base`, training starts from its weights and L2 pulls towards them (adapting a
    model to a small knowledge base without forgetting what the manuals taught it)."""
    pooled: dict[str, list] = {}
    for rows in rows_by_set.values():
        for lang, lang_rows in by_language(rows).items():
            pooled.setdefault(lang, []).extend(lang_rows)
    weights, metrics = {}, {}
    for lang, rows in sorted(pooled.items()):
        train_rows, held_out = split(rows, seed=seed)
        init = base.vector(lang) if base is not None else None
        w = fit_linear(train_rows, l2=l2, steps=steps, init=init)
        candidate = LinearRanker(features=FEATURES, weights={lang: tuple(w)})
        metrics[lang] = {
            "queries": {"train": len(train_rows), "held_out": len(held_out)},
            "recall_order": ranking_metrics(held_out, None),
            "trained": ranking_metrics(held_out, candidate),
        }
        if base is not None:
            metrics[lang]["base"] = ranking_metrics(held_out, base)
        weights[lang] = tuple(fit_linear(rows, l2=l2, steps=steps, init=init))
    for lang in ("en", "zh", "en+e5", "zh+e5"):
        if lang not in weights and base is not None and ("+" not in lang or lang in base.weights):
            weights[lang] = tuple(base.vector(lang))
    model = LinearRanker(features=FEATURES, weights=weights)
    report = {
        "hyperparameters": {
            "loss": "listwise softmax",
            "l2": l2,
            "steps": steps,
            "learning_rate": LEARNING_RATE,
            "hold_out": HOLD_OUT,
            "seed": seed,
        },
        "metrics": metrics,
    }
    return model, report
