"""Keyword search at scale (#15 part 5): bounded MaxScore-style BM25 gives the exhaustive
top k on small scopes, says when a phase met its candidate budget, and reads statistics kept
by triggers on every chunk write (edit, add, delete, disable, ingest, document delete)."""

import pytest
from django.contrib.postgres.search import SearchVector
from django.db import connection

from ingestion.chunk_editing import chunk_add, chunk_delete, chunk_update
from ingestion.models import Chunk, Document
from ingestion.scope import document_scope
from ingestion.services import document_delete
from retrieval.recall import (
    Term,
    _minimal_sets,
    bounded_keyword_search,
    exhaustive_keyword_search,
    keyword_search,
    keyword_statistics,
)
from retrieval.text import TS_CONFIG
from tests.conftest import ingest_texts, make_chunk

pytestmark = pytest.mark.django_db

HASHING = {"BACKEND": "retrieval.embedders.HashingEmbedder", "DIMENSION": 64, "OPTIONS": {}}

WORDS = (
    "vacuum index btree planner replica backup restore tablespace wal checkpoint "
    "autovacuum statistics histogram partition trigger sequence schema role grant lock"
).split()

QUERIES = [
    "vacuum index",
    "btree planner statistics",
    "zebra index",
    "zebra quokka vacuum",
    "wal checkpoint replica backup restore",
    "数据库 索引",
    "索引",
    "nothing matches this",
]


@pytest.fixture
def kb(make_user, make_kb, settings):
    settings.RAG_EMBEDDERS = {**settings.RAG_EMBEDDERS, "hash": HASHING}
    owner = make_user("owner")
    kb = make_kb(owner, "scale", embedders=["hash"])
    docs = [
        Document.objects.create(
            knowledge_base=kb,
            original_name=f"d{d}.txt",
            content_hash=f"h{d}".ljust(64, "x"),
            tags=["even"] if d % 2 == 0 else [],
        )
        for d in range(4)
    ]
    n = 0
    for i in range(60):
        # Zipf-ish: early words everywhere, later ones rare; repeated words vary tf.
        words = [WORDS[(i * j) % (1 + i % len(WORDS))] for j in range(1, 8)]
        if i % 17 == 0:
            words.append("zebra")
        if i == 33:
            words += ["quokka", "quokka"]
        text = " ".join(words)
        if i % 10 == 0:
            text += " 数据库索引的使用"
        make_chunk(kb, docs[i % 4], n, text)
        n += 1
    Chunk.objects.filter(knowledge_base=kb).update(
        search_vector=SearchVector("search_text", config=TS_CONFIG)
    )
    return kb


def recount(kb) -> tuple[tuple[int, int], dict[str, int]]:
    """The statistics counted from the chunks, as the exhaustive search counts them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(sum(search_length), 0) FROM ingestion_chunk "
            "WHERE knowledge_base_id = %s AND enabled AND NOT is_parent",
            [kb.pk],
        )
        totals = tuple(int(x) for x in cursor.fetchone())
        cursor.execute(
            "SELECT u.lexeme, count(*) FROM ingestion_chunk c, unnest(c.search_vector) u "
            "WHERE c.knowledge_base_id = %s AND c.enabled AND NOT c.is_parent GROUP BY 1",
            [kb.pk],
        )
        return totals, dict(cursor.fetchall())


def kept(kb) -> tuple[tuple[int, int], dict[str, int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(chunks), 0), coalesce(sum(total_length), 0) "
            "FROM retrieval_keywordstats WHERE knowledge_base_id = %s",
            [kb.pk],
        )
        totals = tuple(int(x) for x in cursor.fetchone())
        cursor.execute(
            # Every row, zeros included: a word no chunk has any more must not stay behind.
            "SELECT lexeme, df FROM retrieval_lexemestats WHERE knowledge_base_id = %s",
            [kb.pk],
        )
        return totals, dict(cursor.fetchall())


def same(a, b) -> None:
    # Chunks with equal text tie; the two computations sum in different orders, so a tie can
    # come out 1e-15 apart and order differently: compare in (score to 9 digits, id) order.
    def order(hits):
        return sorted(hits, key=lambda h: (-round(h.score, 9), h.chunk_id))

    assert [h.chunk_id for h in order(a)] == [h.chunk_id for h in order(b)]
    assert [h.score for h in a] == pytest.approx([h.score for h in b], rel=1e-9)


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("k", [1, 5, 50])
def test_bounded_top_k_equals_exhaustive_bm25_on_a_small_knowledge_base(kb, query, k):
    exhaustive = exhaustive_keyword_search(knowledge_bases=[kb], query=query, k=k)
    result = bounded_keyword_search(knowledge_bases=[kb], query=query, k=k)
    assert result.exact
    same(result.hits, exhaustive)
    same(keyword_search(knowledge_bases=[kb], query=query, k=k), exhaustive)


@pytest.fixture
def bounded(settings):
    """Every scope treated as large: the candidate budget applies (RAG_KEYWORD_CANDIDATES)."""
    settings.RAG_KEYWORD_EXACT_MAX_CHUNKS = 0


@pytest.mark.parametrize("query", QUERIES)
def test_small_budgets_stay_exact_when_the_bound_proves_it_and_say_so_otherwise(kb, query, bounded):
    exhaustive = exhaustive_keyword_search(knowledge_bases=[kb], query=query, k=5)
    for budget in (1, 3, 8, 30):
        result = bounded_keyword_search(knowledge_bases=[kb], query=query, k=5, budget=budget)
        assert result.scored <= 2 * (budget + 1)
        if result.exact:
            same(result.hits, exhaustive)


def test_the_bound_skips_a_common_word_that_cannot_reach_the_top_k(kb, bounded):
    # "zebra" is rare (4 chunks), "vacuum" in most: after scoring the zebra chunks, no
    # chunk with only "vacuum" can reach the best zebra score, so one phase is exact.
    result = bounded_keyword_search(knowledge_bases=[kb], query="zebra vacuum", k=1, budget=10)
    assert result.exact and result.phases == 1 and result.scored <= 4
    same(result.hits, exhaustive_keyword_search(knowledge_bases=[kb], query="zebra vacuum", k=1))
    # Asking for more than the zebra chunks needs the vacuum chunks: over this budget, the
    # result is flagged approximate rather than silently wrong.
    result = bounded_keyword_search(knowledge_bases=[kb], query="zebra vacuum", k=10, budget=10)
    assert result.phases == 2 and not result.exact
    assert len(result.hits) == 10


def test_all_common_words_start_from_the_chunks_containing_them_all(kb, bounded):
    # Both words over the budget: phase 1 is their AND, phase 2 (if theta allows) the rest.
    result = bounded_keyword_search(knowledge_bases=[kb], query="vacuum index", k=3, budget=2)
    exhaustive = exhaustive_keyword_search(knowledge_bases=[kb], query="vacuum index", k=3)
    if result.exact:
        same(result.hits, exhaustive)
    big = bounded_keyword_search(knowledge_bases=[kb], query="vacuum index", k=3, budget=1000)
    assert big.exact
    same(big.hits, exhaustive)


@pytest.mark.parametrize("query", QUERIES)
def test_a_small_knowledge_base_is_exact_whatever_the_budget(kb, query, settings):
    settings.RAG_KEYWORD_EXACT_MAX_CHUNKS = 1000  # the fixture has 60 chunks
    for budget in (1, 3):
        result = bounded_keyword_search(knowledge_bases=[kb], query=query, k=10, budget=budget)
        assert result.exact
        same(result.hits, exhaustive_keyword_search(knowledge_bases=[kb], query=query, k=10))


def test_minimal_sets_are_the_smallest_sets_whose_bounds_reach_theta():
    a, b, c = Term("a", 1, 1.0, 3.0), Term("b", 1, 1.0, 2.0), Term("c", 1, 1.0, 1.5)
    never = lambda subset: False  # noqa: E731
    assert _minimal_sets([a, b, c], 0.0, never) == [(a,), (b,), (c,)]
    assert _minimal_sets([a, b, c], 2.5, never) == [(a,), (b, c)]
    assert _minimal_sets([a, b, c], 4.0, never) == [(a, b), (a, c)]
    assert _minimal_sets([a, b, c], 7.0, never) == []
    # The full set was phase 1's AND: it is covered, nothing smaller reaches 6.
    assert _minimal_sets([a, b, c], 6.0, lambda s: len(s) == 3) == []


def test_document_filter_scope_and_disabled_chunks_are_honoured(kb):
    even = document_scope(filters={"tags": ["even"]})
    hits = bounded_keyword_search(knowledge_bases=[kb], query="zebra vacuum", k=50, scope=even)
    docs = list(
        Chunk.objects.filter(pk__in=[h.chunk_id for h in hits.hits]).values_list(
            "document__tags", flat=True
        )
    )
    assert hits.hits and all(tags == ["even"] for tags in docs)
    same(
        hits.hits,
        exhaustive_keyword_search(
            knowledge_bases=[kb], query="zebra vacuum", k=50, scope=even, scoped_statistics=False
        ),
    )
    one_doc = Document.objects.filter(knowledge_base=kb).order_by("pk").first()
    hits = keyword_search(knowledge_bases=[kb], query="vacuum", k=50, document_ids=[one_doc.pk])
    assert hits
    assert set(
        Chunk.objects.filter(pk__in=[h.chunk_id for h in hits]).values_list(
            "document_id", flat=True
        )
    ) == {one_doc.pk}
    quokka = Chunk.objects.get(knowledge_base=kb, text__contains="quokka")
    assert [h.chunk_id for h in keyword_search(knowledge_bases=[kb], query="quokka", k=5)] == [
        quokka.pk
    ]
    Chunk.objects.filter(pk=quokka.pk).update(enabled=False)
    assert keyword_search(knowledge_bases=[kb], query="quokka", k=5) == []


def test_statistics_follow_bulk_writes_and_match_a_recount(kb):
    assert kept(kb) == recount(kb)
    stats = keyword_statistics(knowledge_bases=[kb], lexemes=["zebra", "absent"])
    assert stats.chunks == 60 and [t.lexeme for t in stats.terms] == ["zebra"]
    assert stats.terms[0].df == 4
    Chunk.objects.filter(knowledge_base=kb, ordinal__lt=10).update(enabled=False)
    assert kept(kb) == recount(kb)
    Chunk.objects.filter(knowledge_base=kb, ordinal__lt=5).update(is_parent=True, enabled=True)
    assert kept(kb) == recount(kb)
    Chunk.objects.filter(knowledge_base=kb, ordinal__gte=50).delete()
    assert kept(kb) == recount(kb)
    assert kept(kb)[0][0] == 60 - 10 - 10


GUIDE = """# Maintenance

Vacuum reclaims storage occupied by dead tuples after updates and deletes.

## Indexes

A btree index speeds up equality and range lookups on sortable columns.
"""


def test_statistics_follow_ingest_chunk_edits_and_document_delete(make_user, make_kb, settings):
    settings.RAG_EMBEDDERS = {**settings.RAG_EMBEDDERS, "hash": HASHING}
    kb = make_kb(make_user("editor"), "edits", embedders=["hash"])
    ingest_texts(kb, {"guide.md": GUIDE, "other.md": "# Other\n\nTablespaces hold files."})
    assert kept(kb) == recount(kb) and kept(kb)[0][0] > 0
    guide = kb.documents.get(original_name="guide.md")
    chunk = guide.chunks.filter(is_parent=False, text__contains="btree").first()
    before = keyword_statistics(knowledge_bases=[kb], lexemes=["hippopotamus"])
    assert before.terms == ()
    chunk_update(chunk=chunk, text="A hippopotamus index speeds up lookups.")
    assert kept(kb) == recount(kb)
    after = keyword_statistics(knowledge_bases=[kb], lexemes=["hippopotamus"])
    assert [t.df for t in after.terms] == [1]
    assert [
        h.chunk_id for h in keyword_search(knowledge_bases=[kb], query="hippopotamus", k=5)
    ] == [chunk.pk]
    chunk_update(chunk=chunk, enabled=False)
    assert kept(kb) == recount(kb)
    assert keyword_statistics(knowledge_bases=[kb], lexemes=["hippopotamus"]).terms == ()
    added = chunk_add(document=guide, text="Checkpoints flush the write-ahead log.")
    assert kept(kb) == recount(kb)
    chunk_delete(chunk=added)
    assert kept(kb) == recount(kb)
    ingest_texts(kb, {"more.md": "# More\n\nReplication copies the log to a standby."})
    assert kept(kb) == recount(kb)
    document_delete(document=guide)
    assert kept(kb) == recount(kb)
    kb_id = kb.pk
    kb.delete()  # no foreign key to trip over; the rows go with the chunks
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM retrieval_keywordstats WHERE knowledge_base_id = %s), "
            "(SELECT count(*) FROM retrieval_lexemestats WHERE knowledge_base_id = %s)",
            [kb_id, kb_id],
        )
        assert cursor.fetchone() == (0, 0)


@pytest.mark.parametrize("query", QUERIES)
def test_a_filtered_scope_reads_bounded_postings_and_is_exact_when_not_cut(kb, query, bounded):
    even = document_scope(filters={"tags": ["even"]})
    exhaustive = exhaustive_keyword_search(
        knowledge_bases=[kb], query=query, k=5, scope=even, scoped_statistics=False
    )
    for budget in (1, 3, 8):
        result = bounded_keyword_search(
            knowledge_bases=[kb], query=query, k=5, scope=even, budget=budget
        )
        if result.exact:
            same(result.hits, exhaustive)
    result = bounded_keyword_search(knowledge_bases=[kb], query=query, k=5, scope=even, budget=500)
    assert result.exact
    same(result.hits, exhaustive)


def test_the_planner_settings_of_a_keyword_phase_stay_in_it(kb, bounded):
    """Each phase reads its candidates through the GIN index (index scans off, more
    work_mem), set LOCAL to its own transaction: later queries plan as usual."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_indexscan")
        before = cursor.fetchone()[0]
    result = bounded_keyword_search(knowledge_bases=[kb], query="zebra vacuum", k=10, budget=10)
    assert result.hits
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_indexscan'), current_setting('work_mem')")
        assert cursor.fetchone() == (before, "4MB")
