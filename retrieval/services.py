"""The retrieval service: scoped recall (dense + keyword, fused), then rerank and cut off."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings

from ingestion.models import Chunk
from ingestion.scope import DocumentScope, document_scope
from retrieval.backends import embedder_available, get_embedder, get_reranker
from retrieval.cutoffs import Cutoffs, apply_cutoffs
from retrieval.fusion import fuse, stage_weights
from retrieval.recall import (
    Hit,
    dense_search,
    embedded_count,
    keyword_search,
    vector_similarities,
)
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
    scope: DocumentScope = field(default_factory=DocumentScope)  # what recall could read


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
    user=None,
    filters: dict | None = None,
    scope=None,
) -> list[Candidate]:
    """Stage one over knowledge bases the caller has already scoped to the user. Inside
    them, only the documents `user` may read that match `filters` are searched, in SQL
    (ingestion.scope): user None is the system itself (evaluation, benchmarks)."""
    knowledge_bases = list(knowledge_bases)
    if scope is None:
        scope = document_scope(user=user, knowledge_bases=knowledge_bases, filters=filters)
    if not knowledge_bases or not query.strip():
        return []
    if k is None:
        k = settings_for(knowledge_bases).recall_k
    dense = settings.RAG_DENSE_ENABLED if dense is None else dense
    keyword = settings.RAG_KEYWORD_ENABLED if keyword is None else keyword
    names = list(embedders) if embedders is not None else embedders_of(knowledge_bases)
    timings = {} if timings is None else timings
    t0 = time.perf_counter()

    lists: dict[str, list[Hit]] = {}
    vectors = {}
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
            vector = vectors[name] = get_embedder(name).embed_query(query)
            timings[f"embed:{name}"] = (time.perf_counter() - t) * 1000
            lists[f"dense:{name}"] = dense_search(
                knowledge_bases=knowledge_bases,
                embedder=name,
                vector=vector,
                k=k,
                document_ids=document_ids,
                scope=scope,
            )
    if keyword:
        lists["keyword"] = keyword_search(
            knowledge_bases=knowledge_bases,
            query=query,
            k=k,
            document_ids=document_ids,
            scope=scope,
        )
    fused = fuse(lists, query=query, k=sum(len(h) for h in lists.values()), weights=weights)
    candidates = load_candidates(collapse_by_context(fused)[:k], lists)
    # Signals for the second stage (retrieval.recall.vector_similarities): each candidate's
    # section and document cosines, and its own cosine where the embedder's top k missed
    # it. One small statement per embedder over the k candidates.
    by_id = {c.chunk_id: c for c in candidates}
    for name, vector in vectors.items():
        similar = vector_similarities(chunk_ids=list(by_id), embedder=name, vector=vector)
        for chunk_id, (own, section, document) in similar.items():
            signals = by_id[chunk_id].signals
            signals[f"section:{name}"] = section
            signals[f"document:{name}"] = document
            if f"dense:{name}" not in signals:
                signals[f"cosine:{name}"] = own
    # The second-stage embedders' cosines (RAG_RERANK_EMBEDDERS), only once every candidate
    # has its vector (added in the background after ingestion): the ranker's weights for
    # them assume all candidates are scored.
    for name in settings.RAG_RERANK_EMBEDDERS:
        if name in vectors or not embedder_available(name):
            continue
        if not by_id or embedded_count(chunk_ids=list(by_id), embedder=name) < len(by_id):
            continue
        t = time.perf_counter()
        vector = get_embedder(name).embed_query(query)
        timings[f"embed:{name}"] = (time.perf_counter() - t) * 1000
        similar = vector_similarities(chunk_ids=list(by_id), embedder=name, vector=vector)
        for chunk_id, (own, _section, _document) in similar.items():
            by_id[chunk_id].signals[f"cosine:{name}"] = own
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


@dataclass(frozen=True)
class RetrievalSettings:
    recall_k: int
    reranker: str
    cutoffs: Cutoffs
    llm_options: dict


def settings_for(knowledge_bases: Sequence) -> RetrievalSettings:
    """The settings of one question asked over these knowledge bases (the only place that
    merges them). One knowledge base: its own; none: the site defaults. Several:
    - recall k: the largest, so that no knowledge base gets fewer candidates than alone;
    - cut-offs: the most permissive (largest top k; a min score or max drop only when every
      one has one: the lowest min score, the largest drop), so none hides answers the others
      would show;
    - reranker and LLM options: theirs when all agree, else the site defaults: a choice
      made for one knowledge base's documents says nothing about the others'.
    """
    kbs = list(knowledge_bases)
    if not kbs:
        return RetrievalSettings(
            recall_k=settings.RAG_RECALL_K,
            reranker=settings.RAG_DEFAULT_RERANKER,
            cutoffs=Cutoffs(
                top_k=settings.RAG_RERANK_TOP_K,
                min_score=settings.RAG_RERANK_MIN_SCORE,
                max_drop=settings.RAG_RERANK_MAX_DROP,
            ),
            llm_options={},
        )
    min_scores = [kb.setting("rerank_min_score") for kb in kbs]
    max_drops = [kb.setting("rerank_max_drop") for kb in kbs]
    rerankers = {kb.setting("reranker") for kb in kbs}
    llm_options = [kb.llm_options or {} for kb in kbs]
    return RetrievalSettings(
        recall_k=max(kb.setting("recall_k") for kb in kbs),
        reranker=rerankers.pop() if len(rerankers) == 1 else settings.RAG_DEFAULT_RERANKER,
        cutoffs=Cutoffs(
            top_k=max(kb.setting("rerank_top_k") for kb in kbs),
            min_score=None if None in min_scores else min(min_scores),
            max_drop=None if None in max_drops else max(max_drops),
        ),
        llm_options=dict(llm_options[0]) if all(o == llm_options[0] for o in llm_options) else {},
    )


def cutoffs_for(knowledge_bases: Sequence, top_k: int | None = None) -> Cutoffs:
    cutoffs = settings_for(knowledge_bases).cutoffs
    if top_k is not None:
        cutoffs = Cutoffs(top_k=top_k, min_score=cutoffs.min_score, max_drop=cutoffs.max_drop)
    return cutoffs


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
    user=None,
    filters: dict | None = None,
) -> SearchResult:
    """Recall -> rerank -> cut-offs -> sentence support: the one ranking that hit testing,
    `POST /api/v1/search` and the chat answer from. `user` and `filters` scope the documents
    inside recall (see `recall`)."""
    knowledge_bases = list(knowledge_bases)
    timings: dict[str, float] = {}
    scope = document_scope(user=user, knowledge_bases=knowledge_bases, filters=filters)
    recalled = recall(
        knowledge_bases=knowledge_bases,
        query=query,
        k=recall_k,
        dense=dense,
        keyword=keyword,
        embedders=embedders,
        document_ids=document_ids,
        timings=timings,
        scope=scope,
    )
    if reranker is None:
        reranker = settings_for(knowledge_bases).reranker
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
        scope=scope,
        timings_ms={k: round(v, 2) for k, v in timings.items()},
    )
