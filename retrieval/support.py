"""Stage three of retrieval: sentence support.

The reranker reads whole passages; a passage can rank first because it is about the query's
topic while the second one holds the sentence that answers it. This stage scores the best
sentence of each head passage against the query (the claim scorer, RAG_CLAIM_SCORER: a
multilingual cosine by default) and orders the head by rerank score plus that support.
Hit testing, `POST /api/v1/search` and the chat all read this one order, and its score
(`Candidate.final_score`) is what they show, so the order always matches the scores.

Rerank scores are standardised over the whole reranked list (any reranker lands on one
scale); support stays on the scorer's own scale (a cosine), so a 0.02 difference moves
nothing and a 0.2 difference does. Standardising both over the three head passages let
small support differences overturn clear rerank wins; over four citation sets (120
questions) the first source's page accuracy went 0.883 -> 0.900 with this form
(bench/citations/README.md).

Only the first RAG_SUPPORT_K passages are read (sentence scoring is the costly part). A
passage below them gets the weakest head support: it is assumed no better supported than
any head passage, which keeps the final scores in the final order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from django.conf import settings

from retrieval.backends import get_reranker
from retrieval.types import Candidate


def scorer():
    """Scores "does this passage say this sentence" (claim check, support, extracts)."""
    return get_reranker(settings.RAG_CLAIM_SCORER)


TOC_KIND = "toc"


def head_indices(candidates: Sequence[Candidate], k: int) -> list[int]:
    """The first k candidates that can answer: contents and index pages cannot (they list
    every heading, so they match almost any question; ingestion.contents)."""
    return [i for i, c in enumerate(candidates) if c.kind != TOC_KIND][:k]


def sentence_support(query: str, candidates: Sequence[Candidate], *, k: int) -> list[float]:
    """Support of the head candidates (head_indices), in that order."""
    head = [candidates[i] for i in head_indices(candidates, k)]
    return [float(s) for s in scorer().score(query, [c.context for c in head])] if head else []


def order_by_support(
    candidates: Sequence[Candidate],
    support: Sequence[float],
    *,
    reference: Sequence[Candidate] | None = None,
    weight: float | None = None,
) -> list[Candidate]:
    """Candidates (best first by rerank score) with `support` and `final_score` set, in the
    final order. `support` belongs to the head (head_indices). Final score: standardised
    rerank score + weight x support; a contents page counts no support; any other passage
    outside the head counts the weakest head support. Sorting by it keeps the head above
    the tail, the tail in rerank order, and contents pages below what can answer."""
    candidates = list(candidates)
    if not candidates:
        return []
    if weight is None:
        weight = settings.RAG_SUPPORT_WEIGHT
    head = head_indices(candidates, len(support))
    measured = {i: float(support[j]) for j, i in enumerate(head)}
    floor = min(measured.values()) if measured else 0.0
    scores = np.array([c.score for c in (reference or candidates)], dtype=float)
    mean, std = scores.mean(), scores.std()
    out = []
    for i, c in enumerate(candidates):
        z = float((c.score - mean) / std) if std > 1e-9 else 0.0
        s = measured.get(i)
        counted = s if s is not None else (0.0 if c.kind == TOC_KIND else floor)
        out.append(dataclasses.replace(c, support=s, final_score=round(z + weight * counted, 4)))
    return sorted(out, key=lambda c: (-c.final_score, c.recall_rank))


def apply_support(
    query: str,
    candidates: Sequence[Candidate],
    *,
    reference: Sequence[Candidate] | None = None,
    k: int | None = None,
) -> list[Candidate]:
    if k is None:
        k = settings.RAG_SUPPORT_K
    support = sentence_support(query, candidates, k=k)
    return order_by_support(candidates, support, reference=reference)
