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
    scope=None,
) -> list[Hit]:
    """Nearest chunks by cosine similarity, through the embedder's partial HNSW index.
    `scope` (ingestion.scope.DocumentScope) limits the documents inside the SQL."""
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
    if scope is not None:
        scope_sql, scope_params = scope.recall_sql()
        doc_filter += f" {scope_sql}"
        params += scope_params
    params += [literal, k]
    sql = f"""
        SELECT e.chunk_id, (e.embedding::vector({dim})) <=> %s::vector({dim}) AS distance
        FROM ingestion_chunkembedding e
        JOIN ingestion_chunk c ON c.id = e.chunk_id
        WHERE e.embedder = %s AND e.knowledge_base_id = ANY(%s) AND c.enabled {doc_filter}
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


# Okapi BM25 parameters (the usual defaults; rank_bm25 uses the same).
BM25_K1 = 1.2
BM25_B = 0.75


def query_lexemes(query: str) -> list[str]:
    """The query's tokens as PostgreSQL normalises them (stemmed, stopwords dropped)."""
    tokens = query_tokens(query)
    if not tokens:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT lexeme FROM unnest(to_tsvector(%s::regconfig, %s))",
            [TS_CONFIG, " ".join(tokens)],
        )
        return [row[0] for row in cursor.fetchall()]


def keyword_search(
    *,
    knowledge_bases: Sequence,
    query: str,
    k: int,
    document_ids: Sequence[int] | None = None,
    scope=None,
) -> list[Hit]:
    """Okapi BM25 over the jieba-segmented full-text column, computed in PostgreSQL.

    The GIN index finds the chunks that contain any query lexeme; document frequencies and
    lengths come from the same scoped set, so scores are per knowledge-base selection.
    """
    kb_ids = _kb_ids(knowledge_bases)
    lexemes = query_lexemes(query)
    if not kb_ids or not lexemes or k <= 0:
        return []
    tsquery = " | ".join("'" + lex.replace("'", "''") + "'" for lex in lexemes)
    doc_filter, doc_params = "", []
    if document_ids is not None:
        doc_filter, doc_params = "AND c.document_id = ANY(%s)", [list(document_ids)]
    if scope is not None:
        scope_sql, scope_params = scope.recall_sql()
        doc_filter, doc_params = f"{doc_filter} {scope_sql}", doc_params + scope_params
    # A disabled chunk (chunk management) is never recalled, nor counted in the statistics.
    where = f"c.knowledge_base_id = ANY(%s) AND NOT c.is_parent AND c.enabled {doc_filter}"
    counts = ", ".join(
        "count(*) FILTER (WHERE c.search_vector @@ to_tsquery('simple', %s))" for _ in lexemes
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), coalesce(avg(c.search_length), 0) FROM ingestion_chunk c "
            f"WHERE {where}",
            [kb_ids, *doc_params],
        )
        total, avg_length = cursor.fetchone()
        if not total:
            return []
        cursor.execute(
            f"SELECT {counts} FROM ingestion_chunk c WHERE {where} "
            "AND c.search_vector @@ to_tsquery('simple', %s)",
            ["'" + lex.replace("'", "''") + "'" for lex in lexemes]
            + [kb_ids, *doc_params, tsquery],
        )
        dfs = cursor.fetchone()
        idf = [float(np.log1p((total - df + 0.5) / (df + 0.5))) for df in dfs]
        cursor.execute(
            f"""
            WITH q AS (SELECT * FROM unnest(%s::text[], %s::float8[]) AS q(lexeme, idf)),
            m AS (
                SELECT c.id, c.search_vector, c.search_length FROM ingestion_chunk c
                WHERE {where} AND c.search_vector @@ to_tsquery('simple', %s)
            )
            SELECT m.id, sum(
                q.idf * (u.tf * ({BM25_K1} + 1))
                / (u.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * m.search_length / %s))
            ) AS score
            FROM m
            CROSS JOIN LATERAL (
                SELECT lexeme, coalesce(array_length(positions, 1), 1) AS tf
                FROM unnest(m.search_vector)
            ) u
            JOIN q ON q.lexeme = u.lexeme
            GROUP BY m.id
            ORDER BY score DESC, m.id
            LIMIT %s
            """,
            [lexemes, idf, kb_ids, *doc_params, tsquery, max(float(avg_length), 1.0), k],
        )
        return [Hit(chunk_id, float(score)) for chunk_id, score in cursor.fetchall()]


def absent_words(*, knowledge_bases: Sequence, query: str, scope=None) -> tuple[list[str], int]:
    """The query's words that no searchable chunk of the knowledge bases contains (as keyword
    search normalises them: stemmed, stop words dropped, jieba for Chinese), and how many
    words were looked up. A question about something the documents never mention ("What is
    a partial index?" over manuals without partial indexes) has one; a question they answer
    rarely does, except for ordinary words ("licence" where the text says "license"). One
    indexed EXISTS per word (the GIN index), whatever the size of the scope."""
    kb_ids = _kb_ids(knowledge_bases)
    tokens = query_tokens(query)
    if not kb_ids or not tokens:
        return [], 0
    # A word written apart in the question may be one word in the text ("back up" /
    # "backup", "log in" / "login"): the joined neighbours are looked up too.
    pairs = {f"{a}{b}": (a, b) for a, b in zip(tokens, tokens[1:], strict=False) if a.isascii()}
    scope_sql, scope_params = scope.recall_sql() if scope is not None else ("", [])
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT t.token, NOT EXISTS (
                SELECT 1 FROM ingestion_chunk c
                WHERE c.knowledge_base_id = ANY(%s) AND NOT c.is_parent AND c.enabled
                  AND c.search_vector @@ plainto_tsquery(%s::regconfig, t.token) {scope_sql}
            )
            FROM unnest(%s::text[]) AS t(token)
            WHERE numnode(plainto_tsquery(%s::regconfig, t.token)) > 0
            """,
            [kb_ids, TS_CONFIG, *scope_params, tokens + list(pairs), TS_CONFIG],
        )
        rows = dict(cursor.fetchall())
    joined = {w for pair, words in pairs.items() if rows.get(pair) is False for w in words}
    looked_up = [t for t in dict.fromkeys(tokens) if t in rows]
    return [t for t in looked_up if rows[t] and t not in joined], len(looked_up)
