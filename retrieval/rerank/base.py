"""The second stage's one interface: a reranker scores candidates for a query and returns
them best first. Every backend derives from `BaseReranker`; a backend that ranks whole
candidates (with their first-stage signals) overrides `candidate_scores`, one that reads bare
passages implements `score`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from retrieval.types import Candidate


class RerankerError(Exception):
    """The reranker could not score (remote server down, bad answer); message is user-facing."""


class Reranker(Protocol):
    name: str

    def score(self, query: str, passages: Sequence[str]) -> list[float]: ...

    def rerank(
        self, query: str, candidates: Sequence[Candidate], top_k: int | None = None
    ) -> list[Candidate]: ...


class BaseReranker:
    name: str = ""

    def score(self, query: str, passages: Sequence[str]) -> list[float]:  # pragma: no cover
        raise NotImplementedError

    def candidate_scores(self, query: str, candidates: Sequence[Candidate]) -> Sequence[float]:
        """One score per candidate: by default its context (its parent where there is one)."""
        return self.score(query, [c.context or c.text for c in candidates])

    def rerank(
        self, query: str, candidates: Sequence[Candidate], top_k: int | None = None
    ) -> list[Candidate]:
        """The candidates with their `rerank_score`, best first (ties keep recall order)."""
        if not candidates:
            return []
        scores = self.candidate_scores(query, candidates)
        scored = [
            dataclasses.replace(c, rerank_score=float(s))
            for c, s in zip(candidates, scores, strict=True)
        ]
        scored.sort(key=lambda c: (-c.rerank_score, c.recall_rank))
        return scored if top_k is None else scored[:top_k]


def zscore(values: np.ndarray) -> np.ndarray:
    """Per-query standardisation (zeros when every value is the same)."""
    std = values.std()
    if std < 1e-9:
        return np.zeros_like(values)
    return (values - values.mean()) / std


def minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = values.min(), values.max()
    if hi - lo < 1e-9:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)
