import io

import pytest
from django.core.management import call_command

from ingestion.services import document_create, documents_ingest_batch

pytestmark = [pytest.mark.models, pytest.mark.django_db]


def test_owner_qa_pairs_give_the_same_metrics(make_user, make_kb, tmp_path):
    kb = make_kb(make_user("owner"), "handbook")
    ids = [
        document_create(
            knowledge_base=kb, fileobj=io.BytesIO(text.encode()), name=name, enqueue=False
        ).document.pk
        for name, text in {
            "backup.md": "# Backup\n\npg_dump writes a consistent backup of one database.",
            "vacuum.md": "# Vacuum\n\nVACUUM reclaims storage occupied by dead tuples.",
        }.items()
    ]
    documents_ingest_batch(document_ids=ids)
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(
        "question,document\nHow do I back up a database?,backup.md\n"
        "What reclaims dead tuples?,VACUUM.md\nWhat is love?,missing.pdf\n",
        encoding="utf-8",
    )
    out = io.StringIO()
    call_command("evaluate", "--kb", "handbook", "--qa", str(csv_path), stdout=out)
    text = out.getvalue()
    assert "Imported 3 QA pairs." in text and "no document named 'missing.pdf'" in text
    kb.refresh_from_db()
    report = kb.last_evaluation
    assert report["pairs"] == 2 and report["unmatched_pairs"] == 1
    hybrid = report["results"][0]
    assert hybrid["config"] == "hybrid" and hybrid["ndcg@10"] == 1.0
    assert report["results"][1]["config"].startswith("hybrid+rerank:")


def test_owner_uploads_pairs_on_the_dashboard(make_user, make_kb, client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.conftest import ingest_texts

    owner, viewer = make_user("owner"), make_user("viewer")
    kb = ingest_texts(
        make_kb(owner, "handbook"),
        {"vacuum.md": "# Vacuum\n\nVACUUM reclaims storage occupied by dead tuples."},
    )
    csv = SimpleUploadedFile("pairs.csv", b"What reclaims dead tuples?,vacuum.md\n")
    client.force_login(viewer)
    assert client.post(f"/kb/{kb.pk}/qa-pairs", {"csv": csv}).status_code == 404
    client.force_login(owner)
    csv.seek(0)
    response = client.post(f"/kb/{kb.pk}/qa-pairs", {"csv": csv}, follow=True)
    assert "1 pairs imported" in response.content.decode()
    kb.refresh_from_db()
    assert kb.last_evaluation["pairs"] == 1
    page = client.get(f"/kb/{kb.pk}/dashboard/").content.decode()
    assert "hybrid ndcg@10" in page
