from __future__ import annotations

from django.conf import settings
from ninja import Router
from ninja.errors import HttpError

from ingestion.scope import InvalidFilter, parse_filters
from ingestion.selectors import readable_knowledge_bases
from ragapp.api.schemas import SearchIn, SearchOut
from retrieval.services import search as retrieval_search

router = Router(tags=["search"])


def request_filters(raw) -> dict:
    """A request's `filters` in the filter language, or 422 with the reason."""
    try:
        return parse_filters(raw)
    except InvalidFilter as exc:
        raise HttpError(422, f"filters: {exc}") from exc


def readable(user, ids: list[int]):
    kbs = readable_knowledge_bases(user=user, ids=ids)
    if kbs is None:
        raise HttpError(404, "Not found.")
    return kbs


@router.post("/search", response=SearchOut)
def search(request, payload: SearchIn):
    """Retrieval only (recall + rerank, no LLM) over one or several knowledge bases."""
    filters = request_filters(payload.filters)
    kbs = readable(request.user, payload.knowledge_bases)
    if payload.reranker and payload.reranker not in settings.RAG_RERANKERS:
        raise HttpError(400, f"unknown reranker {payload.reranker!r}")
    if not payload.dense and not payload.keyword:
        raise HttpError(400, "at least one of dense and keyword must be on")
    result = retrieval_search(
        knowledge_bases=kbs,
        query=payload.query,
        reranker=payload.reranker,
        recall_k=payload.recall_k,
        top_k=payload.top_k,
        dense=payload.dense,
        keyword=payload.keyword,
        user=request.user,
        filters=filters,
    )
    return {
        "query": result.query,
        "reranker": result.reranker,
        "recalled": len(result.recalled),
        "timings_ms": result.timings_ms,
        "results": [
            {
                "chunk_id": c.chunk_id,
                "document_id": c.document_id,
                "document": c.document_name,
                "page": c.page,
                "heading": c.heading_path,
                "sheet": c.sheet,
                "text": c.text,
                "context": c.context,
                "recall_rank": c.recall_rank,
                "recall_score": c.recall_score,
                "rerank_score": c.rerank_score,
                "support": c.support,
                "score": c.score,
                "signals": c.signals,
            }
            for c in result.results
        ],
    }
