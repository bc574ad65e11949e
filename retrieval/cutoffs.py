"""Which reranked candidates are good enough to show (and to answer from)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from retrieval.types import Candidate


@dataclass(frozen=True)
class Cutoffs:
    top_k: int = 8
    min_score: float | None = None  # absolute: drop scores below it
    max_drop: float | None = None  # relative: drop scores below best * (1 - max_drop)


def apply_cutoffs(candidates: Sequence[Candidate], cutoffs: Cutoffs) -> list[Candidate]:
    """Candidates are best-first; keep the head that passes every cut-off."""
    kept: list[Candidate] = []
    if not candidates:
        return kept
    best = candidates[0].score
    for candidate in candidates[: cutoffs.top_k]:
        score = candidate.score
        if cutoffs.min_score is not None and score < cutoffs.min_score:
            break
        if cutoffs.max_drop is not None and best > 0 and score < best * (1 - cutoffs.max_drop):
            break
        kept.append(candidate)
    return kept
