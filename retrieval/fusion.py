"""Fusing the recall stages' ranked lists into one candidate list.

Equal-weight reciprocal rank fusion lets the weaker stage drag the stronger one down
(English: keyword 0.47 vs MiniLM 0.81 nDCG@10; Chinese: MiniLM 0.23 vs keyword 0.64).
What we measured to work on both languages (bench/fusion_research, nDCG@10 / R@50):

    python-faq-en: best single 0.813 / 0.977 (MiniLM)  ->  fused 0.827 / 0.977
    tex-faq-zh:    best single 0.665 / 0.929 (BM25, USE) -> fused 0.689 / 0.953

is a per-query min-max normalised score sum with weights chosen by the query's language.
Min-max ignores each stage's scale, so BM25 and cosines combine without calibration. The
optimum is flat around the defaults (see bench/fusion_research/README.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.conf import settings

from retrieval.recall import Hit
from textkit import detect_language

# The one language rule (textkit), under the name retrieval's callers know it by.
detect_query_language = detect_language


def stage_weights(query: str, stages: Sequence[str]) -> dict[str, float]:
    """Weight of each stage for this query, from RAG_FUSION_WEIGHTS[language]."""
    table = settings.RAG_FUSION_WEIGHTS.get(detect_query_language(query) or "en", {})
    out = {}
    for stage in stages:
        if stage in table:
            out[stage] = float(table[stage])
        elif stage.startswith("dense:") and "dense:*" in table:
            out[stage] = float(table["dense:*"])
        else:
            out[stage] = float(table.get("*", 1.0))
    return out


def _normalised(hits: Sequence[Hit], *, k: int, floor_zero: bool) -> dict[int, float]:
    if not hits:
        return {}
    hi = hits[0].score
    if len(hits) >= k:
        lo = hits[k - 1].score
    else:
        # Fewer than k: every chunk that BM25 did not return scores 0; a dense list is
        # short only when it already holds every chunk.
        lo = 0.0 if floor_zero else hits[-1].score
    span = hi - lo
    if span <= 1e-9:
        return {h.chunk_id: 1.0 for h in hits}
    return {h.chunk_id: max(0.0, (h.score - lo) / span) for h in hits}


def fuse(
    lists: Mapping[str, Sequence[Hit]],
    *,
    query: str,
    k: int,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[int, float]]:
    """(chunk_id, fused score) best first. `lists` maps a stage name ("keyword",
    "dense:<embedder>") to its hits, best first; a chunk absent from a list scores 0 there."""
    if weights is None:
        weights = stage_weights(query, list(lists))
    fused: dict[int, float] = {}
    for stage, hits in lists.items():
        weight = weights.get(stage, 0.0)
        hits = sorted(hits, key=lambda h: -h.score)
        for chunk_id, value in _normalised(hits, k=k, floor_zero=stage == "keyword").items():
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight * value
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
