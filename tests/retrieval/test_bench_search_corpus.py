"""bench_search --corpus on a tiny corpus: it builds, times every scope it has (no Chinese
scope with fewer than five knowledge bases) and reports the dense search's recall against
exact distances; --drop-corpus removes it."""

import io
import json

import pytest
from django.core.management import call_command

from ingestion.models import KnowledgeBase

pytestmark = pytest.mark.slow


def test_a_small_corpus_is_timed_in_every_scope_it_has(transactional_db, tmp_path):
    # transactional_db: the corpus is loaded with COPY and indexed with CREATE INDEX.
    out = tmp_path / "corpus.json"
    args = dict(corpus=True, skip_rerank=True, stdout=io.StringIO(), stderr=io.StringIO())
    try:
        call_command(
            "bench_search", total=1500, kbs=2, largest=1000, queries=3, json_out=str(out), **args
        )
        rows = json.loads(out.read_text())["corpus"]["rows"]
        assert {r["scope"] for r in rows} == {"small en", "large", "large + tag"}
        assert all(0.0 <= r["dense_recall@10"] <= 1.0 for r in rows)
        assert all(r["keyword_p95_ms"] > 0 and r["hybrid_p95_ms"] > 0 for r in rows)
    finally:
        call_command("bench_search", drop_corpus=True, **args)
    assert not KnowledgeBase.objects.filter(name__startswith="bench-corpus").exists()
