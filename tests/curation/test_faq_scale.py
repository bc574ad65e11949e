"""FAQ matching at scale: each entry's question vector is mirrored by the database into a
pgvector column, whatever writes it, and compared in SQL; bench_faq_scale times the match."""

import json

import pytest
from django.core.management import call_command

from curation.faq import faq_add, faq_match
from curation.models import FaqEntry
from ingestion.models import KnowledgeBase

HASHING = {"BACKEND": "retrieval.embedders.HashingEmbedder", "DIMENSION": 32, "OPTIONS": {}}

pytestmark = pytest.mark.django_db


@pytest.fixture
def kb(make_user, make_kb, settings):
    settings.RAG_EMBEDDERS = {**settings.RAG_EMBEDDERS, "qhash": HASHING}
    settings.RAG_FAQ_MATCH_THRESHOLD = 0.5
    settings.RAG_FAQ_MATCH_THRESHOLDS = {}
    return make_kb(make_user("owner"), "faq", embedders=["qhash"])


def test_the_vector_column_follows_the_json_vector_whatever_writes_it(kb):
    entry = faq_add(knowledge_base=kb, question="How do I rotate the logs?", answer="logrotate.")
    assert entry.embedder == "qhash"
    stored = FaqEntry.objects.get(pk=entry.pk)
    assert [round(x, 5) for x in stored.vector] == [round(x, 5) for x in stored.embedding]
    # A bulk update (as when the configured embedder changes) is mirrored too, and an
    # entry without a vector (a keyword-only knowledge base) has none.
    FaqEntry.objects.filter(pk=entry.pk).update(embedding=[1.0] + [0.0] * 31)
    assert list(FaqEntry.objects.get(pk=entry.pk).vector) == [1.0] + [0.0] * 31
    FaqEntry.objects.filter(pk=entry.pk).update(embedding=[])
    assert FaqEntry.objects.get(pk=entry.pk).vector is None


def test_the_nearest_entry_is_found_in_sql_and_an_entry_without_vector_is_re_embedded(kb):
    rotate = faq_add(knowledge_base=kb, question="How do I rotate the logs?", answer="logrotate.")
    faq_add(knowledge_base=kb, question="Where is the office?", answer="Main street 1.")
    FaqEntry.objects.filter(pk=rotate.pk).update(embedding=[])  # lost, e.g. an old row
    match = faq_match(knowledge_bases=[kb], question="how do i rotate logs")
    assert match is not None and match.entry.pk == rotate.pk and match.embedder == "qhash"
    assert match.score >= 0.5 and match.entry.answer == "logrotate."
    assert FaqEntry.objects.get(pk=rotate.pk).vector is not None  # embedded again, once


def test_bench_faq_scale_times_the_match_and_cleans_up(kb, tmp_path, capsys):
    before = KnowledgeBase.objects.count()
    out = tmp_path / "faq.json"
    call_command(
        "bench_faq_scale", entries=[5, 40], questions=3, embedder="qhash", json_out=str(out)
    )
    report = json.loads(out.read_text())
    assert [row["entries"] for row in report["rows"]] == [5, 40]
    assert all(row["p95_ms"] >= row["p50_ms"] > 0 for row in report["rows"])
    assert KnowledgeBase.objects.count() == before
    assert "entries" in capsys.readouterr().out
