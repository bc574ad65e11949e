"""Stage one: scoped dense and keyword recall over chunks in PostgreSQL.

Every function takes KnowledgeBase objects (already permission-checked by a selector),
never ids from a request.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Mapping, Sequence
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


def _searchable_chunks(kb_ids: list[int]) -> int:
    """Searchable chunks of the knowledge bases, from the trigger-kept statistics."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(chunks), 0) FROM retrieval_keywordstats "
            "WHERE knowledge_base_id = ANY(%s)",
            [kb_ids],
        )
        return int(cursor.fetchone()[0])


@contextlib.contextmanager
def _statement_settings(cursor, values: Mapping[str, str]):
    """Settings for the statements inside the block (in a transaction.atomic), put back after
    them. set_config(..., true) is SET LOCAL, which lasts until the outermost transaction
    ends: inside a caller's transaction (a savepoint does not end it) it would reach every
    later query. A failed statement rolls its savepoint back, settings included."""
    names = list(values)
    reads = ", ".join(["current_setting(%s, true)"] * len(names))
    writes = ", ".join(["set_config(%s, %s, true)"] * len(names))
    cursor.execute(
        f"SELECT {reads}, {writes}", [*names, *(x for n in names for x in (n, values[n]))]
    )
    previous = cursor.fetchone()[: len(names)]
    yield
    for name, value in zip(names, previous, strict=True):
        if value is None:  # not defined before: an extension's, loaded by the statement
            cursor.execute(f"SET LOCAL {name} TO DEFAULT")
        else:
            cursor.execute("SELECT set_config(%s, %s, true)", [name, value])


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
    `scope` (ingestion.scope.DocumentScope) limits the documents inside the SQL.

    Knowledge bases with at most RAG_DENSE_EXACT_MAX_CHUNKS chunks together are searched
    exactly instead: a graph over a million chunks holds a small knowledge base's chunks
    sparsely, so the filtered iterative scan visits many neighbours of other knowledge
    bases, slower than computing every distance of the few thousand that qualify."""
    kb_ids = _kb_ids(knowledge_bases)
    if not kb_ids or k <= 0:
        return []
    exact = _searchable_chunks(kb_ids) <= settings.RAG_DENSE_EXACT_MAX_CHUNKS
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
        scope_sql, scope_params = scope.recall_sql(knowledge_base_ids=kb_ids)
        doc_filter += f" {scope_sql}"
        params += scope_params
    params += [literal, k]
    distance = f"(e.embedding::vector({dim})) <=> %s::vector({dim})"
    sql = f"""
        SELECT e.chunk_id, {distance} AS distance
        FROM ingestion_chunkembedding e
        JOIN ingestion_chunk c ON c.id = e.chunk_id
        WHERE e.embedder = %s AND e.knowledge_base_id = ANY(%s) AND c.enabled {doc_filter}
        ORDER BY {distance}
        LIMIT %s
    """
    if exact:
        # No ORDER BY the HNSW index matches: the knowledge bases' vectors come through the
        # (embedder, knowledge base) btree, the distance is computed in the subquery (OFFSET
        # 0 keeps it there) and only (id, distance) rows reach the top-k sort.
        sql = f"""
            SELECT chunk_id, distance FROM (
                SELECT e.chunk_id, {distance} AS distance
                FROM ingestion_chunkembedding e
                JOIN ingestion_chunk c ON c.id = e.chunk_id
                WHERE e.embedder = %s AND e.knowledge_base_id = ANY(%s) AND c.enabled
                    {doc_filter}
                OFFSET 0
            ) s
            ORDER BY distance, chunk_id
            LIMIT %s
        """
        params = [*params[:-2], k]  # the distance once, in the subquery
    # Relaxed iterative scans keep returning rows when the knowledge-base filter discards
    # most of the index's neighbours.
    hnsw = {"hnsw.ef_search": str(max(ef_search, k)), "hnsw.iterative_scan": "relaxed_order"}
    with transaction.atomic(), connection.cursor() as cursor:
        with _statement_settings(cursor, hnsw):
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    hits = [Hit(chunk_id, 1.0 - float(distance)) for chunk_id, distance in rows]
    # relaxed_order may return slightly out-of-order rows; the caller wants them sorted.
    hits.sort(key=lambda h: -h.score)
    return hits


def embedded_count(*, chunk_ids: Sequence[int], embedder: str) -> int:
    """How many of the chunks have a vector of the embedder."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM ingestion_chunkembedding WHERE chunk_id = ANY(%s) "
            "AND embedder = %s",
            [list(chunk_ids), embedder],
        )
        return int(cursor.fetchone()[0])


# A document's vector is the mean of its chunks' only up to this many chunks: a longer
# document's mean says little about any passage, and reading it would cost each query.
DOCUMENT_VECTOR_CHUNKS = 64


def vector_similarities(*, chunk_ids: Sequence[int], embedder: str, vector: np.ndarray) -> dict:
    """For each chunk, the query's cosine to (the chunk's own vector, its section's, its
    document's). A section is the mean of the vectors of its parent's enabled children, a
    document the mean of its enabled recall chunks'; each falls back to the smaller unit
    (no parent; a document over DOCUMENT_VECTOR_CHUNKS). A child matches one passage; the means say
    whether the whole section or document is about the question, with no extra embedding
    at ingestion. The chunk's own cosine fills in the dense score of a candidate that the
    embedder's top k missed. One statement for all the candidates: the means are
    MATERIALIZED because the planner, expecting one candidate, otherwise recomputed them
    for each (48 ms instead of 3 ms for 50 candidates on python-faq-en)."""
    if not chunk_ids:
        return {}
    dim = embedder_dimension(embedder)
    literal = _vector_literal(vector)
    sql = f"""
        WITH cand AS (
            SELECT id, parent_id, document_id FROM ingestion_chunk WHERE id = ANY(%(ids)s)
        ), own AS (
            SELECT chunk_id, embedding::vector({dim}) AS v FROM ingestion_chunkembedding
            WHERE chunk_id = ANY(%(ids)s) AND embedder = %(embedder)s
        ), section AS MATERIALIZED (
            SELECT s.parent_id, avg(e.embedding::vector({dim})) AS v
            FROM ingestion_chunk s
            JOIN ingestion_chunkembedding e ON e.chunk_id = s.id AND e.embedder = %(embedder)s
            WHERE s.parent_id IN (SELECT parent_id FROM cand) AND s.enabled
            GROUP BY s.parent_id
        ), document AS MATERIALIZED (
            SELECT d.document_id, m.v FROM (SELECT DISTINCT document_id FROM cand) d
            CROSS JOIN LATERAL (
                SELECT avg(x.v) AS v, count(*) AS n FROM (
                    SELECT e.embedding::vector({dim}) AS v
                    FROM ingestion_chunk s
                    JOIN ingestion_chunkembedding e
                        ON e.chunk_id = s.id AND e.embedder = %(embedder)s
                    WHERE s.document_id = d.document_id AND NOT s.is_parent AND s.enabled
                    LIMIT %(cap)s
                ) x
            ) m
            WHERE m.n < %(cap)s
        )
        SELECT cand.id, 1 - (own.v <=> q.v), 1 - (coalesce(section.v, own.v) <=> q.v),
            1 - (coalesce(document.v, section.v, own.v) <=> q.v)
        FROM cand
        CROSS JOIN (SELECT %(query)s::vector({dim}) AS v) q
        JOIN own ON own.chunk_id = cand.id
        LEFT JOIN section ON section.parent_id = cand.parent_id
        LEFT JOIN document ON document.document_id = cand.document_id
    """
    params = {
        "ids": list(chunk_ids),
        "embedder": embedder,
        "cap": DOCUMENT_VECTOR_CHUNKS + 1,
        "query": literal,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {
            chunk_id: tuple(float(v) for v in values) for chunk_id, *values in cursor.fetchall()
        }


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


def _tsquery(lexemes: Sequence[str], op: str = "|") -> str:
    return f" {op} ".join("'" + lex.replace("'", "''") + "'" for lex in lexemes)


def _scope_filter(document_ids, scope, kb_ids: list[int]) -> tuple[str, list]:
    doc_filter, doc_params = "", []
    if document_ids is not None:
        doc_filter, doc_params = "AND c.document_id = ANY(%s)", [list(document_ids)]
    if scope is not None:
        scope_sql, scope_params = scope.recall_sql(knowledge_base_ids=kb_ids)
        doc_filter, doc_params = f"{doc_filter} {scope_sql}", doc_params + scope_params
    return doc_filter, doc_params


def _idf(total: int, df: int) -> float:
    return float(np.log1p((total - df + 0.5) / (df + 0.5)))


@dataclass(frozen=True)
class Term:
    lexeme: str
    df: int
    idf: float
    # No chunk's BM25 contribution from this lexeme reaches it: tf at most max_tf, length
    # at least 0 (tf / (tf + K) grows with tf and K shrinks with the length).
    bound: float


@dataclass(frozen=True)
class KeywordStatistics:
    chunks: int
    avg_length: float
    terms: tuple[Term, ...]  # the query lexemes the knowledge bases contain, rarest first


def keyword_statistics(*, knowledge_bases: Sequence, lexemes: Sequence[str]) -> KeywordStatistics:
    """BM25 statistics of the knowledge bases' searchable chunks (retrieval.KeywordStats and
    LexemeStats, kept by triggers on every chunk write): two index lookups, not a count."""
    kb_ids = _kb_ids(knowledge_bases)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(chunks), 0), coalesce(sum(total_length), 0) "
            "FROM retrieval_keywordstats WHERE knowledge_base_id = ANY(%s)",
            [kb_ids],
        )
        chunks, total_length = cursor.fetchone()
        cursor.execute(
            "SELECT lexeme, sum(df), max(max_tf) FROM retrieval_lexemestats "
            "WHERE knowledge_base_id = ANY(%s) AND lexeme = ANY(%s) GROUP BY lexeme",
            [kb_ids, list(lexemes)],
        )
        rows = {lex: (int(df), int(max_tf)) for lex, df, max_tf in cursor.fetchall()}
    chunks = int(chunks)
    terms = []
    for lex in dict.fromkeys(lexemes):
        df, max_tf = rows.get(lex, (0, 0))
        if df <= 0 or chunks <= 0:
            continue
        idf = _idf(chunks, df)
        tf = max(max_tf, 1)
        terms.append(Term(lex, df, idf, idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B))))
    terms.sort(key=lambda t: (-t.bound, t.lexeme))
    avg_length = float(total_length) / chunks if chunks else 0.0
    return KeywordStatistics(chunks, avg_length, tuple(terms))


@dataclass(frozen=True)
class KeywordResult:
    hits: list[Hit]
    exact: bool  # False when a phase hit the candidate budget (the top k may miss chunks)
    phases: int
    scored: int


def keyword_search(
    *,
    knowledge_bases: Sequence,
    query: str,
    k: int,
    document_ids: Sequence[int] | None = None,
    scope=None,
) -> list[Hit]:
    """Okapi BM25 over the jieba-segmented full-text column, computed in PostgreSQL.

    Statistics (chunk count, average length, document frequencies) are those of the selected
    knowledge bases' searchable chunks, kept by triggers (keyword_statistics); a document
    filter or visibility scope limits which chunks are returned, not the IDF, as in search
    engines. Candidates come bounded from the (knowledge base, lexeme) GIN index, rarest
    lexemes first, and the top k is exact unless a query's words are all very common (see
    bounded_keyword_search).

    Where the knowledge bases hold restricted documents this user may not see, statistics
    come from the chunks the user may see instead (counted per query: slower on a large
    knowledge base), so that no hidden document's words weigh on the scores they see."""
    if scope is not None and scope.hides_documents(_kb_ids(knowledge_bases)):
        return exhaustive_keyword_search(
            knowledge_bases=knowledge_bases,
            query=query,
            k=k,
            document_ids=document_ids,
            scope=scope,
            scoped_statistics=True,
        )
    return bounded_keyword_search(
        knowledge_bases=knowledge_bases,
        query=query,
        k=k,
        document_ids=document_ids,
        scope=scope,
    ).hits


def _minimal_sets(terms: Sequence[Term], theta: float, covered) -> list[tuple[Term, ...]]:
    """The smallest sets of lexemes whose bounds add up to theta or more, among the sets a
    chunk not scored yet can contain (`covered(set)` is False). A chunk whose lexemes are
    no such superset scores below theta and cannot enter the top k."""
    found: list[frozenset] = []
    n = len(terms)
    for size in range(1, n + 1):
        for combo in itertools.combinations(range(n), size):
            chosen = frozenset(combo)
            if any(f <= chosen for f in found):
                continue
            subset = [terms[i] for i in combo]
            if covered(subset) or sum(t.bound for t in subset) < theta:
                continue
            found.append(chosen)
    return [tuple(terms[i] for i in sorted(f)) for f in found]


# Memory for one keyword phase's candidates (up to VISITS_PER_CANDIDATE x the budget rows
# with their tsvectors: ~16 MB at the default budget under a filter).
KEYWORD_WORK_MEM = "32MB"
# Beyond this many lexemes, the sets of the second phase are not enumerated (2^n).
MAX_BOUNDED_TERMS = 10
# Under a document filter, a phase reads at most this many postings per candidate it may
# score (a 10% filter passes about a tenth of them; the result says when it was cut).
VISITS_PER_CANDIDATE = 4


def bounded_keyword_search(
    *,
    knowledge_bases: Sequence,
    query: str,
    k: int,
    document_ids: Sequence[int] | None = None,
    scope=None,
    budget: int | None = None,
) -> KeywordResult:
    """MaxScore-style BM25 top k, in at most three bounded phases.

    1. Candidates: the chunks containing one of the rarest lexemes, as many lexemes as fit in
       the budget of postings (document frequencies are known); when even the rarest is too
       common, the chunks containing all lexemes. They are scored with every lexeme.
    2. theta = the k-th score so far. A chunk not scored yet contains only lexemes outside
       phase 1's query, and scores less than the sum of their bounds; only chunks with a
       set of lexemes whose bounds reach theta can still enter the top k, so phase 2 scores
       exactly those (an AND of each minimal set), none when there is no such set. When a
       single leftover lexeme could still reach theta (phase 1 found fewer than k chunks, or
       weak ones), the chunks containing all leftover lexemes are scored first to raise it.
    The result is exact (`exact`) unless a phase met the budget; then it is the best of the
    chunks scored."""
    kb_ids = _kb_ids(knowledge_bases)
    if budget is None:
        budget = settings.RAG_KEYWORD_CANDIDATES
    lexemes = query_lexemes(query)
    if not kb_ids or not lexemes or k <= 0:
        return KeywordResult([], True, 0, 0)
    stats = keyword_statistics(knowledge_bases=knowledge_bases, lexemes=lexemes)
    terms = list(stats.terms)
    if not terms:
        return KeywordResult([], True, 0, 0)
    if stats.chunks <= settings.RAG_KEYWORD_EXACT_MAX_CHUNKS:
        # A small scope is never cut short: no phase can match more chunks than it has (the
        # phases still prune, so this costs at most the exhaustive search).
        budget = max(budget, stats.chunks)
    doc_filter, doc_params = _scope_filter(document_ids, scope, kb_ids)
    # bigint[]: psycopg sends small ids as smallint[], which the (knowledge_base_id,
    # search_vector) GIN index (btree_gin, no cross-type operators) could not search.
    searchable = "c.knowledge_base_id = ANY(%s::bigint[]) AND NOT c.is_parent AND c.enabled"
    avg_length = max(stats.avg_length, 1.0)
    spent = 0  # candidates scored so far: the budget is for the whole search

    def score(tsquery: str, exclude: str | None) -> tuple[list[Hit], bool, int]:
        """Top k of the chunks matching tsquery (not exclude), whether they were all scored
        (not cut at the budget left) and how many were."""
        limit = max(budget - spent, budget // 4, 1)
        # With a document filter, most postings may fail it: the postings read are capped
        # too (a few times the limit), or a selective filter would read them all.
        visits = limit * (VISITS_PER_CANDIDATE if doc_filter.strip() else 1)
        not_scored = "AND NOT c.search_vector @@ %s::tsquery" if exclude else ""
        # setweight + ts_filter keep only the query's lexemes before unnest (a chunk has
        # dozens); the join on q drops anything else that carried weight A already. The
        # first row carries the counts (read, passed the filter), then the top k.
        sql = f"""
            WITH q AS (SELECT * FROM unnest(%s::text[], %s::float8[]) AS q(lexeme, idf)),
            read AS MATERIALIZED (
                SELECT c.id, c.document_id, c.search_vector, c.search_length
                FROM ingestion_chunk c
                WHERE {searchable} AND c.search_vector @@ %s::tsquery {not_scored}
                LIMIT %s
            ),
            m AS MATERIALIZED (SELECT c.* FROM read c WHERE TRUE {doc_filter} LIMIT %s),
            s AS (
                SELECT m.id, (
                    SELECT sum(
                        q.idf * (u.tf * ({BM25_K1} + 1))
                        / (u.tf + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * m.search_length / %s))
                    )
                    FROM (
                        SELECT lexeme, coalesce(array_length(positions, 1), 1) AS tf
                        FROM unnest(ts_filter(setweight(m.search_vector, 'A', %s::text[]),
                                              '{{a}}'))
                    ) u JOIN q ON q.lexeme = u.lexeme
                ) AS score
                FROM m
            )
            SELECT NULL::bigint, (SELECT count(*) FROM read)::float8,
                   (SELECT count(*) FROM m)::bigint
            UNION ALL (SELECT id, score, NULL FROM s ORDER BY score DESC, id LIMIT %s)
        """
        params = [
            [t.lexeme for t in terms],
            [t.idf for t in terms],
            kb_ids,
            tsquery,
            *([exclude] if exclude else []),
            visits + 1,
            *doc_params,
            limit + 1,
            avg_length,
            [t.lexeme for t in terms],
            k,
        ]
        # Candidates come from the GIN index. Given the LIMIT, the planner may prefer walking
        # the knowledge base's btree and testing every chunk for the lexemes: for a common
        # word in 500k chunks it tested 270k rows to find 32k (224 ms; 60 ms through the
        # GIN). And the read candidates stay in memory, not a temp file.
        planner = {"enable_indexscan": "off", "work_mem": KEYWORD_WORK_MEM}
        with transaction.atomic(), connection.cursor() as cursor:
            with _statement_settings(cursor, planner):
                cursor.execute(sql, params)
                (_, read, passed), *rows = cursor.fetchall()
        complete = int(read) <= visits and int(passed) <= limit
        return [Hit(cid, float(sc)) for cid, sc, _ in rows], complete, min(int(passed), limit)

    # Phase 1: rarest lexemes while their postings fit in the budget.
    first: list[Term] = []
    postings = 0
    for term in terms:
        if postings + term.df > budget:
            break
        first.append(term)
        postings += term.df
    if first:
        phase1 = _tsquery([t.lexeme for t in first])
        rest = [t for t in terms if t not in first]

        def covered(subset):
            return False  # phase 2 looks only at the lexemes phase 1 did not query

    else:
        phase1 = _tsquery([t.lexeme for t in terms], "&")
        rest = terms

        def covered(subset):
            return len(subset) == len(terms)

    def merge(a: list[Hit], b: list[Hit]) -> list[Hit]:
        unique = {h.chunk_id: h for h in a + b}.values()
        return sorted(unique, key=lambda h: (-h.score, h.chunk_id))[:k]

    def kth(hits: list[Hit]) -> float:
        return hits[k - 1].score if len(hits) >= k else 0.0

    hits, exact, spent = score(phase1, None)
    phases = 1
    done = [phase1]  # tsqueries whose chunks are all scored (when exact)
    if rest and len(rest) > 1 and not covered(rest) and rest[0].bound >= kth(hits):
        # A single leftover lexeme could still reach theta (phase 1 found few chunks): the
        # chunks containing all of them first, to raise theta before choosing phase 2.
        conjunction = _tsquery([t.lexeme for t in rest], "&")
        more, complete, scored = score(conjunction, phase1)
        hits = merge(hits, more)
        exact = exact and complete
        phases, spent = phases + 1, spent + scored
        done.append(conjunction)
        earlier = covered

        def covered(subset):
            return earlier(subset) or len(subset) == len(rest)

    if rest:
        theta = kth(hits)
        if len(rest) > MAX_BOUNDED_TERMS:
            sets = [(t,) for t in rest]
        else:
            sets = _minimal_sets(rest, theta, covered)
        if sets:
            query_sets = " | ".join(
                "(" + _tsquery([t.lexeme for t in group], "&") + ")" for group in sets
            )
            more, complete, scored = score(query_sets, " | ".join(f"({q})" for q in done))
            hits = merge(hits, more)
            exact = exact and complete
            phases, spent = phases + 1, spent + scored
    return KeywordResult(hits, exact, phases, spent)


def exhaustive_keyword_search(
    *,
    knowledge_bases: Sequence,
    query: str,
    k: int,
    document_ids: Sequence[int] | None = None,
    scope=None,
    scoped_statistics: bool = True,
) -> list[Hit]:
    """The reference: every chunk containing a query lexeme scored, statistics counted in
    the query (of the scoped chunks, as keyword search did before issue #15 part 5, or of the
    knowledge bases with scoped_statistics=False). Linear in the matches: for tests and
    bench_search, not for requests."""
    kb_ids = _kb_ids(knowledge_bases)
    lexemes = query_lexemes(query)
    if not kb_ids or not lexemes or k <= 0:
        return []
    tsquery = _tsquery(lexemes)
    doc_filter, doc_params = _scope_filter(document_ids, scope, kb_ids)
    where = f"c.knowledge_base_id = ANY(%s) AND NOT c.is_parent AND c.enabled {doc_filter}"
    stats_where, stats_params = (
        (where, [kb_ids, *doc_params])
        if scoped_statistics
        else ("c.knowledge_base_id = ANY(%s) AND NOT c.is_parent AND c.enabled", [kb_ids])
    )
    counts = ", ".join(
        "count(*) FILTER (WHERE c.search_vector @@ to_tsquery('simple', %s))" for _ in lexemes
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*), coalesce(avg(c.search_length), 0) FROM ingestion_chunk c "
            f"WHERE {stats_where}",
            stats_params,
        )
        total, avg_length = cursor.fetchone()
        if not total:
            return []
        cursor.execute(
            f"SELECT {counts} FROM ingestion_chunk c WHERE {stats_where} "
            "AND c.search_vector @@ to_tsquery('simple', %s)",
            ["'" + lex.replace("'", "''") + "'" for lex in lexemes] + stats_params + [tsquery],
        )
        dfs = cursor.fetchone()
        idf = [_idf(total, df) for df in dfs]
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
    scope_sql, scope_params = (
        scope.recall_sql(knowledge_base_ids=kb_ids) if scope is not None else ("", [])
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT t.token, NOT EXISTS (
                SELECT 1 FROM ingestion_chunk c
                WHERE c.knowledge_base_id = ANY(%s::bigint[]) AND NOT c.is_parent AND c.enabled
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
