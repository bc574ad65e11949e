"""The linear ranker: a small learned model over per-query standardised features, the default
second stage (served by retrieval.rerank.learned.LearnedReranker).

Offline there is no trained cross-encoder to install, and MiniLM's vocabulary carries no
Chinese meaning, so no single model wins on both languages. What generalises across
manuals is how the first-stage signals agree, once each is put on a per-query scale:
keyword BM25, the cosine of each embedder, how much of the query (IDF-weighted among the
candidates) a passage covers, and how many recalled chunks its document contributed.
A linear model per query language weighs them; it was trained on weak queries from
Debian's postgresql-doc-15 and libreoffice-help-* manuals (bench/reranker/train_default.py),
never on anything the dev sets were built from. numpy only: ~1 ms for 50 candidates.

RAG_RERANKERS["default"] = {
    "BACKEND": "retrieval.rerank.learned.LearnedReranker",
    "OPTIONS": {"model_path": "retrieval/weights/default_ranker.json"},
}
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from retrieval.fusion import detect_query_language
from retrieval.rerank.base import minmax, zscore
from retrieval.text import query_tokens, segment, tokens_in
from retrieval.types import Candidate

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "weights" / "default_ranker.json"

# Order matters: a model file lists the features it was trained on and is refused when
# the code computes a different set.
FEATURES = (
    "keyword_z",
    "keyword_minmax",
    "keyword_missing",
    "dense:minilm_z",
    "dense:minilm_minmax",
    "dense:use_z",
    "dense:use_minmax",
    "fused_z",
    "recall_rrank",
    "coverage_z",
    "coverage",
    "doc_chunks",
    "doc_best_fused_z",
    "section:minilm_z",
    "section:use_z",
    "document:minilm_z",
    "document:use_z",
    "e5_z",
    "e5_minmax",
    "doc_best_e5_z",
)
# The second-stage embedder the "e5_*" features read (settings.RAG_RERANK_EMBEDDERS): its
# cosine to every candidate, from its recall stage or computed for the second stage. A
# model's weights for them sit under "LANGUAGE+e5"; a query whose candidates lack them is
# scored with the plain "LANGUAGE" weights, trained without them.
SECOND_STAGE_EMBEDDER = "e5"


def second_stage_cosines(candidates: Sequence[Candidate]) -> np.ndarray | None:
    name = SECOND_STAGE_EMBEDDER
    values = [c.signals.get(f"dense:{name}", c.signals.get(f"cosine:{name}")) for c in candidates]
    if not values or None in values:
        return None
    return np.array(values, dtype=float)


def _signal(candidates: Sequence[Candidate], stage: str) -> tuple[np.ndarray, np.ndarray]:
    """The stage's raw scores and a 'missing' mask; a missing score is imputed just below
    the lowest one the stage returned (it ranked the chunk out of its top k)."""
    # A dense stage's cosine of a chunk its top k missed is known exactly ("cosine:NAME",
    # retrieval.services.recall): only older candidates without it are imputed.
    exact = "cosine:" + stage.removeprefix("dense:") if stage.startswith("dense:") else None
    raw = [c.signals.get(stage, c.signals.get(exact)) for c in candidates]
    missing = np.array([v is None for v in raw], dtype=float)
    present = [v for v in raw if v is not None]
    if not present:
        return np.zeros(len(candidates)), missing
    floor = 0.0 if stage == "keyword" else min(present) - 0.01
    return np.array([floor if v is None else float(v) for v in raw]), missing


def features(query: str, candidates: Sequence[Candidate]) -> np.ndarray:
    """(len(candidates), len(FEATURES)) matrix; every column comparable across queries."""
    n = len(candidates)
    out = np.zeros((n, len(FEATURES)))
    if n == 0:
        return out
    col = {name: i for i, name in enumerate(FEATURES)}

    keyword, keyword_missing = _signal(candidates, "keyword")
    out[:, col["keyword_z"]] = zscore(keyword)
    out[:, col["keyword_minmax"]] = minmax(keyword)
    out[:, col["keyword_missing"]] = keyword_missing
    for stage in ("dense:minilm", "dense:use"):
        values, missing = _signal(candidates, stage)
        if missing.all():  # the stage did not run for this query (e.g. MiniLM on Chinese)
            continue
        out[:, col[f"{stage}_z"]] = zscore(values)
        out[:, col[f"{stage}_minmax"]] = minmax(values)
        # Each chunk's section and document (retrieval.recall.vector_similarities).
        name = stage.removeprefix("dense:")
        for unit in ("section", "document"):
            values = [c.signals.get(f"{unit}:{name}") for c in candidates]
            if None not in values:
                out[:, col[f"{unit}:{name}_z"]] = zscore(np.array(values))
    fused = np.array([c.recall_score for c in candidates], dtype=float)
    out[:, col["fused_z"]] = zscore(fused)
    out[:, col["recall_rrank"]] = [1.0 / math.sqrt(max(c.recall_rank, 1)) for c in candidates]

    # Query coverage, each query token weighted by its IDF among these candidates: a
    # token every candidate has says nothing; the rare ones the passage shares say a lot.
    tokens = [t for t in (segment(q) for q in query_tokens(query)) for t in t.split()]
    tokens = list(dict.fromkeys(tokens))
    passages = [tokens_in(c.context or c.text, tokens) for c in candidates]
    if tokens:
        df = Counter(t for p in passages for t in tokens if t in p)
        idf = {t: math.log((n + 1) / (df.get(t, 0) + 0.5)) for t in tokens}
        total = sum(idf.values()) or 1.0
        coverage = np.array([sum(idf[t] for t in tokens if t in p) / total for p in passages])
        out[:, col["coverage"]] = coverage
        out[:, col["coverage_z"]] = zscore(coverage)

    # Documents: several recalled chunks of one document are evidence for it, and a
    # chunk shares its document's best fused score (rankings are judged per document).
    per_doc = Counter(c.document_id for c in candidates)
    best: dict[int, float] = {}
    for c, f in zip(candidates, out[:, col["fused_z"]], strict=True):
        best[c.document_id] = max(best.get(c.document_id, -1e9), float(f))
    out[:, col["doc_chunks"]] = [math.log(per_doc[c.document_id]) for c in candidates]
    out[:, col["doc_best_fused_z"]] = [best[c.document_id] for c in candidates]

    cosines = second_stage_cosines(candidates)
    if cosines is not None:
        out[:, col["e5_z"]] = zscore(cosines)
        out[:, col["e5_minmax"]] = minmax(cosines)
        best = {}
        for c, z in zip(candidates, out[:, col["e5_z"]], strict=True):
            best[c.document_id] = max(best.get(c.document_id, -1e9), float(z))
        out[:, col["doc_best_e5_z"]] = [best[c.document_id] for c in candidates]
    return out


def weights_key(query: str, candidates: Sequence[Candidate]) -> str:
    """Which weights score this query: its language's ("en", "zh"), with the second-stage
    embedder's cosines ("en+e5") when every candidate has one."""
    language = detect_query_language(query) or "en"
    if second_stage_cosines(candidates) is not None:
        return f"{language}+{SECOND_STAGE_EMBEDDER}"
    return language


@dataclasses.dataclass(frozen=True)
class LinearRanker:
    """score = features · weights + bias, one weight vector per query language."""

    features: tuple[str, ...]
    weights: Mapping[str, tuple[float, ...]]
    card: Mapping = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> LinearRanker:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        names = tuple(data["features"])
        unknown = [f for f in names if f not in FEATURES]
        if unknown:
            raise ValueError(f"{path}: features this code cannot compute: {unknown}")
        weights = {lang: tuple(float(x) for x in w) for lang, w in data["weights"].items()}
        return cls(features=names, weights=weights, card=data.get("card", {}))

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "features": list(self.features),
            "weights": {k: [round(x, 6) for x in v] for k, v in self.weights.items()},
            "card": dict(self.card),
        }
        Path(path).write_text(json.dumps(payload, indent=1, ensure_ascii=False), "utf-8")

    def vector(self, language: str) -> np.ndarray:
        """Weights over FEATURES (zeros for features this model does not use)."""
        w = self.weights.get(language) or self.weights.get(language.split("+")[0])
        w = w or self.weights.get("en")
        if w is None:  # a knowledge base's model may know one language only
            w = next(iter(self.weights.values()))
        full = np.zeros(len(FEATURES))
        for name, value in zip(self.features, w, strict=True):
            full[FEATURES.index(name)] = value
        return full

    def weights_key(self, query: str, candidates: Sequence[Candidate]) -> str:
        """weights_key(), where the model has weights for it, else the language's."""
        key = weights_key(query, candidates)
        return key if key in self.weights else key.split("+")[0]

    def scores(self, query: str, candidates: Sequence[Candidate]) -> np.ndarray:
        return features(query, candidates) @ self.vector(self.weights_key(query, candidates))
