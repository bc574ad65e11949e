import io

import pytest
from django.core.management import call_command

from ingestion.models import ChunkEmbedding
from ingestion.services import document_create, documents_ingest_batch

pytestmark = [pytest.mark.models, pytest.mark.django_db]


def test_reembed_switches_embedders_and_replaces_vectors(make_user, make_kb):
    kb = make_kb(make_user("owner"), "notes", embedders=["use"])
    result = document_create(
        knowledge_base=kb,
        fileobj=io.BytesIO(b"Indexes make lookups fast."),
        name="a.txt",
        enqueue=False,
    )
    documents_ingest_batch(document_ids=[result.document.pk])
    assert set(ChunkEmbedding.objects.values_list("embedder", flat=True)) == {"use"}
    out = io.StringIO()
    call_command(
        "reembed", "--kb", "notes", "--embedder", "minilm", stdout=out, stderr=io.StringIO()
    )
    assert set(ChunkEmbedding.objects.values_list("embedder", flat=True)) == {"minilm"}
    assert "1 chunks re-embedded with minilm" in out.getvalue()
