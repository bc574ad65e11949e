"""Stage one: scoped dense and keyword recall over chunks in PostgreSQL.

Every function takes KnowledgeBase objects (already permission-checked by a selector),
never ids from a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from ingestion.vector_indexes import embedder_dimension
from retrieval.text import TS_CONFIG, query_tokens


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    score: float


def _kb_ids(knowledge_bases) -> list[int]:
    return [kb.pk for kb in knowledge_bases]


def _vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"


def dense_search(
    *,
    knowledge_bases: Sequence,
    embedder: str,
    vector: np.ndarray,
    k: int,
    ef_search: int | None = None,
    document_ids: Sequence[int] | None = None,
) -> list[Hit]:
    """Nearest chunks by cosine similarity, through the embedder's partial HNSW index."""
    kb_ids = _kb_ids(knowledge_bases)
    if not kb_ids or k <= 0:
        return []
    dim = embedder_dimension(embedder)
    if ef_search is None:
        ef_search = settings.RAG_HNSW_EF_SEARCH
    literal = _vector_literal(vector)
    doc_filter = ""
    params: list = [literal, embedder, kb_ids]
    if document_ids is not None:
        doc_filter = "AND c.document_id = ANY(%s)"
        params.append(list(document_ids))
    params += [literal, k]
    sql = f"""
        SELECT e.chunk_id, (e.embedding::vector({dim})) <=> %s::vector({dim}) AS distance
        FROM ingestion_chunkembedding e
        JOIN ingestion_chunk c ON c.id = e.chunk_id
        WHERE e.embedder = %s AND e.knowledge_base_id = ANY(%s) {doc_filter}
        ORDER BY (e.embedding::vector({dim})) <=> %s::vector({dim})
        LIMIT %s
    """
    with transaction.atomic(), connection.cursor() as cursor:
        # SET LOCAL keeps these to this transaction; relaxed iterative scans keep returning
        # rows when the knowledge-base filter discards most of the index's neighbours.
        cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(max(ef_search, k))])
        cursor.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    hits = [Hit(chunk_id, 1.0 - float(distance)) for chunk_id, distance in rows]
    # relaxed_order may return slightly out-of-order rows; the caller wants them sorted.
    hits.sort(key=lambda h: -h.score)
    return hits


def keyword_search(
    *,
    knowledge_bases: Sequence,
    query: str,
    k: int,
    document_ids: Sequence[int] | None = None,
) -> list[Hit]:
    """Chunks matching any query token, ranked by ts_rank_cd (see retrieval.bm25 for BM25)."""
    kb_ids = _kb_ids(knowledge_bases)
    tokens = query_tokens(query)
    if not kb_ids or not tokens or k <= 0:
        return []
    tsquery = " | ".join(f"'{t}'" for t in tokens)
    doc_filter = ""
    params: list = [TS_CONFIG, tsquery, kb_ids]
    if document_ids is not None:
        doc_filter = "AND c.document_id = ANY(%s)"
        params.append(list(document_ids))
    params.append(k)
    sql = f"""
        SELECT c.id, ts_rank_cd(c.search_vector, q.query) AS rank
        FROM ingestion_chunk c, to_tsquery(%s::regconfig, %s) q(query)
        WHERE c.knowledge_base_id = ANY(%s) AND NOT c.is_parent
          AND c.search_vector @@ q.query {doc_filter}
        ORDER BY rank DESC, c.id
        LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [Hit(chunk_id, float(rank)) for chunk_id, rank in cursor.fetchall()]
