"""Fusing the ranked lists of the recall stages into one candidate list.

Placeholder until the measured fusion lands: weighted reciprocal rank fusion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from retrieval.recall import Hit


def detect_query_language(text: str) -> str:
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff")
    latin = sum(1 for ch in text if ch.isascii() and ch.isalpha())
    if cjk == 0 and latin == 0:
        return ""
    return "zh" if cjk >= 0.2 * (cjk + latin) or cjk >= 2 else "en"


def fuse(
    lists: Mapping[str, Sequence[Hit]],
    *,
    query: str,
    k: int,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[int, float]]:
    """(chunk_id, fused score) best first; `lists` maps a stage name to its ranked hits."""
    rrf_k = 60.0
    scores: dict[int, float] = {}
    for stage, hits in lists.items():
        weight = 1.0 if weights is None else weights.get(stage, 1.0)
        for rank, hit in enumerate(hits, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight / (rrf_k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
