"""Retrieval metrics and the evaluation run behind `manage.py evaluate`.

A hit is a retrieved chunk of a relevant document. Rankings are turned into document
rankings by the first appearance of each document, so a document split into several chunks
counts once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textkit import percentile


@dataclass(frozen=True)
class Dataset:
    name: str
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}


def load_beir(directory: str | Path) -> Dataset:
    root = Path(directory)
    corpus = {}
    with open(root / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                corpus[str(row["_id"])] = (row.get("title") or "", row.get("text") or "")
    queries = {}
    with open(root / "queries.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                queries[str(row["_id"])] = row["text"]
    qrels: dict[str, dict[str, int]] = {}
    qrels_path = root / "qrels" / "test.tsv"
    with open(qrels_path, encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or (i == 0 and not parts[2].strip().lstrip("-").isdigit()):
                continue
            if int(parts[2]) > 0:
                qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries = {q: text for q, text in queries.items() if q in qrels}
    return Dataset(root.name, corpus, queries, qrels)


def dedupe_documents(doc_ids: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for doc in doc_ids:
        seen.setdefault(doc, None)
    return list(seen)


def ndcg_at(ranked: Sequence[str], relevant: dict[str, int], k: int = 10) -> float:
    dcg = sum(
        (2 ** relevant.get(doc, 0) - 1) / math.log2(i + 2) for i, doc in enumerate(ranked[:k])
    )
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum((2**rel - 1) / math.log2(i + 2) for i, rel in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def mrr_at(ranked: Sequence[str], relevant: dict[str, int], k: int = 10) -> float:
    for i, doc in enumerate(ranked[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at(ranked: Sequence[str], relevant: dict[str, int], k: int) -> float:
    wanted = {d for d, r in relevant.items() if r > 0}
    return len(wanted & set(ranked[:k])) / len(wanted) if wanted else 0.0


@dataclass
class ConfigResult:
    config: str
    ndcg: list[float] = field(default_factory=list)
    mrr: list[float] = field(default_factory=list)
    recall10: list[float] = field(default_factory=list)
    recallk: list[float] = field(default_factory=list)
    recall_ms: list[float] = field(default_factory=list)
    rerank_ms: list[float] = field(default_factory=list)
    relevant_scores: list[float] = field(default_factory=list)
    irrelevant_top_scores: list[float] = field(default_factory=list)

    def add(
        self,
        ranked_docs: Sequence[str],
        candidate_docs: Sequence[str],
        relevant: dict[str, int],
        recall_ms: float,
        rerank_ms: float,
    ) -> None:
        self.ndcg.append(ndcg_at(ranked_docs, relevant))
        self.mrr.append(mrr_at(ranked_docs, relevant))
        self.recall10.append(recall_at(ranked_docs, relevant, 10))
        self.recallk.append(recall_at(candidate_docs, relevant, len(candidate_docs) or 1))
        self.recall_ms.append(recall_ms)
        self.rerank_ms.append(rerank_ms)

    def summary(self) -> dict:
        out = {
            "config": self.config,
            "ndcg@10": round(float(np.mean(self.ndcg)), 4) if self.ndcg else 0.0,
            "mrr@10": round(float(np.mean(self.mrr)), 4) if self.mrr else 0.0,
            "recall@10": round(float(np.mean(self.recall10)), 4) if self.recall10 else 0.0,
            "recall@k": round(float(np.mean(self.recallk)), 4) if self.recallk else 0.0,
            "latency_ms": {
                "recall_p50": round(percentile(self.recall_ms, 50), 1),
                "recall_p95": round(percentile(self.recall_ms, 95), 1),
                "rerank_p50": round(percentile(self.rerank_ms, 50), 1),
                "rerank_p95": round(percentile(self.rerank_ms, 95), 1),
            },
        }
        if self.relevant_scores:
            out["threshold"] = threshold_report(self.relevant_scores, self.irrelevant_top_scores)
        return out


def threshold_report(relevant: Sequence[float], irrelevant: Sequence[float]) -> dict:
    """Score thresholds an owner could set, and what each would keep.

    `relevant`: the best score of a relevant passage per query (when recalled);
    `irrelevant`: the best score of an irrelevant passage per query.
    """
    rel = np.asarray(relevant)
    irr = np.asarray(irrelevant) if len(irrelevant) else np.asarray([np.nan])
    out = {}
    for keep in (0.95, 0.9, 0.8):
        threshold = float(np.quantile(rel, 1 - keep))
        out[f"keep_{int(keep * 100)}"] = {
            "threshold": round(threshold, 4),
            "irrelevant_top_above": round(float(np.nanmean(irr >= threshold)), 3),
        }
    return out


def format_table(results: Sequence[dict], *, title: str) -> str:
    header = (
        f"{'config':<34} {'nDCG@10':>8} {'MRR@10':>8} {'R@10':>7} {'R@k':>7} "
        f"{'recall p50/p95 ms':>18} {'rerank p50/p95 ms':>18}"
    )
    lines = [title, header, "-" * len(header)]
    for r in results:
        lat = r["latency_ms"]
        lines.append(
            f"{r['config']:<34} {r['ndcg@10']:>8.3f} {r['mrr@10']:>8.3f} {r['recall@10']:>7.3f} "
            f"{r['recall@k']:>7.3f} {lat['recall_p50']:>8.0f}/{lat['recall_p95']:<9.0f} "
            f"{lat['rerank_p50']:>8.0f}/{lat['rerank_p95']:<9.0f}"
        )
    return "\n".join(lines)
