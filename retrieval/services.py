"""The retrieval service: scoped recall (dense + keyword, fused), then rerank and cut off."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings

from ingestion.models import Chunk
from retrieval.backends import get_embedder, get_reranker
from retrieval.cutoffs import Cutoffs, apply_cutoffs
from retrieval.fusion import fuse, stage_weights
from retrieval.recall import Hit, dense_search, keyword_search
from retrieval.support import apply_support
from retrieval.types import Candidate


@dataclass(frozen=True)
class SearchResult:
    query: str
    recalled: list[Candidate]  # fused recall order
    reranked: list[Candidate]  # all recalled candidates in rerank order
    results: list[Candidate]  # what passes the cut-offs, in the final (support) order
    cutoffs: Cutoffs
    reranker: str
    timings_ms: dict[str, float] = field(default_factory=dict)


def embedders_of(knowledge_bases: Sequence) -> list[str]:
    """Embedders that every selected knowledge base has vectors for, in a stable order."""
    names: list[str] | None = None
    for kb in knowledge_bases:
        names = list(kb.embedders) if names is None else [n for n in names if n in kb.embedders]
    return names or []


def recall(
    *,
    knowledge_bases: Sequence,
    query: str,
    k: int | None = None,
    dense: bool | None = None,
    keyword: bool | None = None,
    embedders: Sequence[str] | None = None,
    document_ids: Sequence[int] | None = None,
    timings: dict | None = None,
) -> list[Candidate]:
    """Stage one over knowledge bases the caller has already scoped to the user."""
    knowledge_bases = list(knowledge_bases)
    if not knowledge_bases or not query.strip():
        return []
    if k is None:
        k = knowledge_bases[0].setting("recall_k")
    dense = settings.RAG_DENSE_ENABLED if dense is None else dense
    keyword = settings.RAG_KEYWORD_ENABLED if keyword is None else keyword
    names = list(embedders) if embedders is not None else embedders_of(knowledge_bases)
    timings = {} if timings is None else timings
    t0 = time.perf_counter()

    lists: dict[str, list[Hit]] = {}
    stages = [f"dense:{n}" for n in names] * bool(dense) + ["keyword"] * bool(keyword)
    weights = stage_weights(query, stages)
    if len(stages) == 1 or sum(weights.values()) <= 0:
        weights = dict.fromkeys(stages, 1.0)  # one stage (or none weighted): its own order
    # A stage with weight 0 cannot change the fused order: do not run it.
    names = [n for n in names if weights.get(f"dense:{n}", 0) > 0]
    keyword = keyword and weights.get("keyword", 0) > 0
    if dense:
        for name in names:
            t = time.perf_counter()
            vector = get_embedder(name).embed_query(query)
            timings[f"embed:{name}"] = (time.perf_counter() - t) * 1000
            lists[f"dense:{name}"] = dense_search(
                knowledge_bases=knowledge_bases,
                embedder=name,
                vector=vector,
                k=k,
                document_ids=document_ids,
            )
    if keyword:
        lists["keyword"] = keyword_search(
            knowledge_bases=knowledge_bases, query=query, k=k, document_ids=document_ids
        )
    fused = fuse(lists, query=query, k=sum(len(h) for h in lists.values()), weights=weights)
    candidates = load_candidates(collapse_by_context(fused)[:k], lists)
    timings["recall"] = (time.perf_counter() - t0) * 1000
    return candidates


def collapse_by_context(fused: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """One candidate per context: children of one parent would make the reranker and the
    LLM read the same parent several times, and would crowd other documents out of the k
    candidates. The best-scoring child stands for its parent."""
    parent_of = dict(
        Chunk.objects.filter(pk__in=[c for c, _ in fused]).values_list("pk", "parent_id")
    )
    seen: set[int] = set()
    out = []
    for chunk_id, score in fused:
        key = parent_of.get(chunk_id) or -chunk_id
        if key in seen:
            continue
        seen.add(key)
        out.append((chunk_id, score))
    return out


def load_candidates(fused: list[tuple[int, float]], lists: dict[str, list[Hit]]) -> list[Candidate]:
    ids = [chunk_id for chunk_id, _ in fused]
    rows = {c.pk: c for c in Chunk.objects.filter(pk__in=ids).select_related("document", "parent")}
    signals: dict[int, dict[str, float]] = {}
    for stage, hits in lists.items():
        for hit in hits:
            signals.setdefault(hit.chunk_id, {})[stage] = hit.score
    out = []
    for rank, (chunk_id, score) in enumerate(fused, start=1):
        chunk = rows.get(chunk_id)
        if chunk is None:  # deleted between the two queries
            continue
        out.append(
            Candidate(
                chunk_id=chunk.pk,
                document_id=chunk.document_id,
                document_name=chunk.document.original_name,
                text=chunk.text,
                context=_context_text(chunk),
                heading_path=chunk.heading_path,
                page=chunk.page,
                page_end=chunk.page_end,
                sheet=chunk.sheet,
                slide=chunk.slide,
                knowledge_base_id=chunk.knowledge_base_id,
                kind=chunk.kind,
                recall_rank=rank,
                recall_score=score,
                signals=signals.get(chunk_id, {}),
            )
        )
    return out


def _context_text(chunk: Chunk) -> str:
    text = chunk.parent.text if chunk.parent_id else chunk.text
    return f"{chunk.heading_path}\n{text}" if chunk.heading_path else text


def cutoffs_for(knowledge_bases: Sequence, top_k: int | None = None) -> Cutoffs:
    kb = knowledge_bases[0] if knowledge_bases else None
    get = (
        (lambda name: kb.setting(name))
        if kb
        else (lambda name: getattr(settings, f"RAG_{name.upper()}"))
    )
    return Cutoffs(
        top_k=top_k if top_k is not None else get("rerank_top_k"),
        min_score=get("rerank_min_score"),
        max_drop=get("rerank_max_drop"),
    )


def search(
    *,
    knowledge_bases: Sequence,
    query: str,
    reranker: str | None = None,
    recall_k: int | None = None,
    top_k: int | None = None,
    dense: bool | None = None,
    keyword: bool | None = None,
    embedders: Sequence[str] | None = None,
    document_ids: Sequence[int] | None = None,
    support: bool = True,
) -> SearchResult:
    """Recall -> rerank -> cut-offs -> sentence support: the one ranking that hit testing,
    `POST /api/v1/search` and the chat answer from."""
    knowledge_bases = list(knowledge_bases)
    timings: dict[str, float] = {}
    recalled = recall(
        knowledge_bases=knowledge_bases,
        query=query,
        k=recall_k,
        dense=dense,
        keyword=keyword,
        embedders=embedders,
        document_ids=document_ids,
        timings=timings,
    )
    if reranker is None:
        reranker = (
            knowledge_bases[0].reranker if knowledge_bases else ""
        ) or settings.RAG_DEFAULT_RERANKER
    backend = get_reranker(reranker)
    t0 = time.perf_counter()
    reranked = backend.rerank(query, recalled)
    timings["rerank"] = (time.perf_counter() - t0) * 1000
    cutoffs = cutoffs_for(knowledge_bases, top_k)
    results = apply_cutoffs(reranked, cutoffs)
    if support and results:
        t0 = time.perf_counter()
        results = apply_support(query, results, reference=reranked)
        timings["support"] = (time.perf_counter() - t0) * 1000
    return SearchResult(
        query=query,
        recalled=recalled,
        reranked=reranked,
        results=results,
        cutoffs=cutoffs,
        reranker=reranker,
        timings_ms={k: round(v, 2) for k, v in timings.items()},
    )
