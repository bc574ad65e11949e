"""Second-stage embedders (settings.RAG_RERANK_EMBEDDERS): e5 vectors added after a document
is ready, read by the ranker only once every candidate has one. Real models, real PostgreSQL."""

import numpy as np
import pytest

from ingestion.chunk_editing import chunk_update
from ingestion.models import Chunk, ChunkEmbedding
from ingestion.services import (
    document_delete,
    document_embed_for_rerank,
    documents_embed_for_rerank,
    rerank_embedders_for,
)
from retrieval.backends import get_embedder
from retrieval.rerank.linear import DEFAULT_MODEL, LinearRanker
from retrieval.services import recall, search
from tests.conftest import ingest_texts
from tests.retrieval.test_search import DOCS as SEARCH_DOCS

pytestmark = [pytest.mark.models, pytest.mark.django_db]

DOCS = {name: SEARCH_DOCS[name] for name in ("backup.txt", "vacuum.txt", "合并.md")}


@pytest.fixture
def kb(make_user, make_kb):
    return ingest_texts(make_kb(make_user("owner"), "manuals"), DOCS)


def _e5_vectors(kb) -> int:
    return ChunkEmbedding.objects.filter(knowledge_base=kb, embedder="e5").count()


def test_vectors_are_added_once_and_the_ranker_uses_them_only_when_complete(kb):
    children = Chunk.objects.filter(knowledge_base=kb, is_parent=False)
    assert rerank_embedders_for(kb) == ["e5"] and _e5_vectors(kb) == 0
    model = LinearRanker.load(DEFAULT_MODEL)
    query = "How do I back up a database?"

    before = recall(knowledge_bases=[kb], query=query)
    assert not any("cosine:e5" in c.signals for c in before)
    assert model.weights_key(query, before) == "en"

    ids = list(kb.documents.values_list("pk", flat=True))
    assert documents_embed_for_rerank(document_ids=ids) == children.count()
    assert documents_embed_for_rerank(document_ids=ids) == 0  # a repeated message adds nothing
    assert _e5_vectors(kb) == children.count()

    after = recall(knowledge_bases=[kb], query=query)
    assert all("cosine:e5" in c.signals for c in after)
    assert model.weights_key(query, after) == "en+e5"
    assert model.weights_key("如何合并单元格", after) == "zh+e5"
    e5 = get_embedder("e5")
    top = Chunk.objects.get(pk=after[0].chunk_id)
    expected = float(e5.embed_query(query) @ e5.embed_documents([top.embed_text])[0])
    assert after[0].signals["cosine:e5"] == pytest.approx(expected, abs=1e-3)
    assert search(knowledge_bases=[kb], query=query).results[0].document_name == "backup.txt"

    # An edited chunk loses its vector with its old text: until it is embedded again, the
    # question is ranked with the plain weights.
    chunk = children.get(document__original_name="vacuum.txt")
    chunk_update(chunk=chunk, text="VACUUM FULL rewrites the whole table into a new file.")
    assert not ChunkEmbedding.objects.filter(chunk=chunk, embedder="e5").exists()
    assert not any("cosine:e5" in c.signals for c in recall(knowledge_bases=[kb], query=query))
    assert document_embed_for_rerank(document_id=chunk.document_id) == 1


def test_nothing_is_added_for_a_deleted_document_or_a_knowledge_base_recalling_with_e5(
    kb, make_user, make_kb
):
    document = kb.documents.get(original_name="backup.txt")
    document_delete(document=document)
    assert document_embed_for_rerank(document_id=document.pk) == 0

    with_e5 = make_kb(make_user("other"), "e5 kb", embedders=["minilm", "e5"])
    assert rerank_embedders_for(with_e5) == []
    ingest_texts(with_e5, {"a.txt": DOCS["vacuum.txt"]})
    ids = list(with_e5.documents.values_list("pk", flat=True))
    assert documents_embed_for_rerank(document_ids=ids) == 0
    # Its recall stage's cosines feed the same features: the second-stage weights apply.
    found = recall(knowledge_bases=[with_e5], query="dead tuples")
    assert found and all("dense:e5" in c.signals or "cosine:e5" in c.signals for c in found)
    assert LinearRanker.load(DEFAULT_MODEL).weights_key("dead tuples", found) == "en+e5"


def test_reembedding_keeps_the_second_stage_vectors(kb):
    from ingestion.services import knowledge_base_reembed

    documents_embed_for_rerank(document_ids=kb.documents.values_list("pk", flat=True))
    before = dict(
        ChunkEmbedding.objects.filter(knowledge_base=kb, embedder="e5").values_list(
            "chunk_id", "embedding"
        )
    )
    knowledge_base_reembed(knowledge_base=kb)
    after = dict(
        ChunkEmbedding.objects.filter(knowledge_base=kb, embedder="e5").values_list(
            "chunk_id", "embedding"
        )
    )
    assert set(after) == set(before)
    assert all(np.allclose(after[k], before[k]) for k in before)


def test_the_command_fills_in_documents_ingested_without_them(
    kb, django_capture_on_commit_callbacks
):
    import io

    from django.core.management import call_command

    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=False) as sent:
        call_command("embed_for_rerank", "--kb", kb.name, stdout=out)
    assert "3 documents queued for e5" in out.getvalue() and len(sent) == 3
    call_command("embed_for_rerank", "--kb", kb.name, "--here", stdout=out, stderr=io.StringIO())
    children = Chunk.objects.filter(knowledge_base=kb, is_parent=False).count()
    assert f"{children} vectors added (e5)" in out.getvalue() and _e5_vectors(kb) == children
    out = io.StringIO()
    call_command("embed_for_rerank", "--kb", kb.name, stdout=out)
    assert "0 documents queued" in out.getvalue()
