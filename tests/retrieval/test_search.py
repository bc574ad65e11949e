"""The retrieval service and the evaluation harness on real models and real PostgreSQL."""

import io
import json

import pytest
from django.core.management import call_command

from retrieval.services import search
from tests.conftest import FIXTURES, ingest_texts

pytestmark = [pytest.mark.models, pytest.mark.django_db]

DOCS = {
    "backup.txt": "pg_dump writes a consistent backup of one database as an SQL script.",
    "vacuum.txt": "VACUUM reclaims storage occupied by dead tuples after updates and deletes.",
    "index.md": "# Indexes\n\nA B-tree index keeps keys sorted: fast equality and range lookups.",
    "合并.md": "# 表格\n\n在表格中合并单元格：选中要合并的单元格，然后选择“合并单元格”。",
    "页码.txt": "页眉和页脚是页面顶部和底部的区域，可以在页脚中插入页码。",
}


@pytest.fixture
def kb_with_docs(make_user, make_kb):
    return ingest_texts(make_kb(make_user("owner"), "manuals"), DOCS)


@pytest.mark.parametrize(
    "question, expected",
    [
        ("How do I back up a database?", "backup.txt"),
        ("what reclaims space from dead tuples", "vacuum.txt"),
        ("如何合并单元格？", "合并.md"),
        ("怎样插入页码", "页码.txt"),
    ],
)
def test_hybrid_search_finds_the_answer_in_both_languages(kb_with_docs, question, expected):
    result = search(knowledge_bases=[kb_with_docs], query=question, reranker="none")
    assert result.results[0].document_name == expected
    assert result.timings_ms["recall"] > 0 and "rerank" in result.timings_ms


def test_stages_can_be_switched_off_and_documents_filtered(kb_with_docs):
    words = search(knowledge_bases=[kb_with_docs], query="pg_dump backup", dense=False)
    assert words.results and all(set(c.signals) == {"keyword"} for c in words.recalled)
    vectors = search(knowledge_bases=[kb_with_docs], query="pg_dump backup", keyword=False)
    assert all("keyword" not in c.signals for c in vectors.recalled)
    vacuum = kb_with_docs.documents.get(original_name="vacuum.txt")
    only = search(knowledge_bases=[kb_with_docs], query="backup", document_ids=[vacuum.pk])
    assert {c.document_id for c in only.recalled} == {vacuum.pk}


def test_rerank_reads_parent_context(kb_with_docs):
    result = search(knowledge_bases=[kb_with_docs], query="合并单元格")
    top = result.results[0]
    assert top.heading_path == "表格" and top.context.startswith("表格\n")


def test_evaluate_command_writes_the_documented_json(tmp_path):
    out = tmp_path / "eval.json"
    stdout = io.StringIO()
    call_command(
        "evaluate",
        str(FIXTURES / "bench-tiny"),
        "--json",
        str(out),
        "--reranker",
        "none",
        stdout=stdout,
        stderr=io.StringIO(),
    )
    report = json.loads(out.read_text())
    assert report["dataset"] == "bench-tiny" and report["queries"] == 4
    assert report["documents"] == 6
    configs = [r["config"] for r in report["results"]]
    assert configs == ["dense:minilm", "dense:use", "keyword", "hybrid", "hybrid+rerank:none"]
    for row in report["results"]:
        assert set(row) >= {"ndcg@10", "mrr@10", "recall@10", "recall@k", "latency_ms"}
        assert set(row["latency_ms"]) == {"recall_p50", "recall_p95", "rerank_p50", "rerank_p95"}
    hybrid = next(r for r in report["results"] if r["config"] == "hybrid")
    assert hybrid["recall@k"] == 1.0 and hybrid["ndcg@10"] > 0.8
    assert "nDCG@10" in stdout.getvalue()
    # It cleans up after itself.
    from ingestion.models import KnowledgeBase

    assert not KnowledgeBase.objects.filter(name__startswith="eval bench-tiny").exists()


def test_candidates_carry_their_section_and_exact_cosines(make_user, make_kb):
    """The section signal is the query's cosine to the mean of the parent's children's
    vectors; a chunk a dense stage's top k missed gets its exact cosine instead."""
    import numpy as np

    from ingestion.models import Chunk
    from retrieval.backends import get_embedder
    from retrieval.services import recall

    paragraphs = [
        "The planner estimates the cost of each plan from table statistics.",
        "ANALYZE collects those statistics; autovacuum runs it when tables change.",
        "Bad estimates show up in EXPLAIN as rows far from the actual counts.",
    ]
    body = "\n\n".join(
        p + " " + " ".join(["Details follow in the next sections."] * 12) for p in paragraphs
    )
    kb = ingest_texts(
        make_kb(make_user("owner"), "planner"), {"planner.md": f"# Planner\n\n{body}"}
    )
    children = Chunk.objects.filter(knowledge_base=kb, is_parent=False, parent__isnull=False)
    assert children.count() >= 2, "the document must give one parent several children"

    query = "how does the planner estimate costs"
    found = recall(knowledge_bases=[kb], query=query, k=2, keyword=False)
    vector = get_embedder("minilm").embed_query(query)
    for c in found:
        chunk = Chunk.objects.get(pk=c.chunk_id)
        siblings = [
            np.asarray(e.embedding, dtype=float)
            for s in Chunk.objects.filter(parent_id=chunk.parent_id)
            for e in s.embeddings.filter(embedder="minilm")
        ]
        mean = np.mean(siblings, axis=0)
        expected = float(mean @ vector / np.linalg.norm(mean) / np.linalg.norm(vector))
        assert c.signals["section:minilm"] == pytest.approx(expected, abs=1e-4)
    # Every candidate has each embedder's cosine: from its top k, else computed exactly.
    for c in found:
        for name in ("minilm", "use"):
            assert (f"dense:{name}" in c.signals) != (f"cosine:{name}" in c.signals)
