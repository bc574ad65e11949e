"""One upload loop (ingestion.services.documents_upload) behind the portal, the API and
`manage.py ingest`; a refused file carries a reason code that callers act on."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from ingestion.models import Document
from ingestion.services import documents_upload
from ragapp.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_user):
    return make_user("alice")


def _files(settings):
    settings.RAG_MAX_UPLOAD_BYTES = 64
    return [
        ("good.txt", io.BytesIO(b"a good text file")),
        ("empty.txt", io.BytesIO(b"")),
        ("program.exe", io.BytesIO(b"MZ binary")),
        ("big.txt", io.BytesIO(b"x" * 100)),
        ("again.txt", io.BytesIO(b"a good text file")),  # the same content as good.txt
    ]


def test_each_file_gets_an_outcome_with_its_reason_and_the_rest_go_on(alice, make_kb, settings):
    kb = make_kb(alice)
    outcomes = documents_upload(knowledge_base=kb, files=_files(settings), uploaded_by=alice)
    assert [(o.name, o.reason) for o in outcomes] == [
        ("good.txt", ""),
        ("empty.txt", "empty"),
        ("program.exe", "unsupported"),
        ("big.txt", "too_large"),
        ("again.txt", "duplicate"),
    ]
    assert [o.accepted for o in outcomes] == [True, False, False, False, False]
    assert all(o.error for o in outcomes[1:])
    assert Document.objects.filter(knowledge_base=kb).count() == 1
    event = AuditEvent.objects.get(action="document.upload")
    assert event.object_label == "good.txt" and event.actor == alice


def test_the_api_reports_reasons_and_picks_its_status_from_them_not_the_text(
    alice, make_kb, settings, client, monkeypatch
):
    from ingestion import services

    kb = make_kb(alice)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(alice, 't')[1]}"}
    url = f"/api/v1/knowledge-bases/{kb.pk}/documents"
    settings.RAG_MAX_UPLOAD_BYTES = 8
    # The message may say anything (a translation, a reworded limit): the code decides.
    real = services.validate_upload

    def reworded(*, name, size):
        try:
            real(name=name, size=size)
        except services.UploadRejected as exc:
            raise services.UploadRejected("zu groß", reason=exc.reason) from exc

    monkeypatch.setattr(services, "validate_upload", reworded)
    big = [SimpleUploadedFile(f"{i}.txt", b"x" * 20) for i in range(2)]
    response = client.post(url, {"files": big}, **auth)
    assert response.status_code == 413 and response.json()["error"]["message"] == "zu groß"
    mixed = [SimpleUploadedFile("a.txt", b"x" * 20), SimpleUploadedFile("b.exe", b"x")]
    response = client.post(url, {"files": mixed}, **auth)
    assert response.status_code == 201
    assert [r["reason"] for r in response.json()["refused"]] == ["too_large", "unsupported"]
    response = client.post(url, {"files": [SimpleUploadedFile("c.exe", b"x")]}, **auth)
    assert response.status_code == 415


def test_the_portal_and_ingest_use_the_same_loop(alice, make_kb, client, tmp_path, monkeypatch):
    from django.urls import reverse

    from ingestion.management.commands import ingest

    kb = make_kb(alice, "web")
    client.force_login(alice)
    response = client.post(
        reverse("kb_upload", args=[kb.pk]),
        {"files": [SimpleUploadedFile("a.txt", b"portal text"), SimpleUploadedFile("e.txt", b"")]},
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
    )
    body = response.json()
    assert [a["name"] for a in body["accepted"]] == ["a.txt"]
    assert [(r["name"], r["reason"]) for r in body["refused"]] == [("e.txt", "empty")]

    monkeypatch.setattr(ingest, "require_worker", lambda: None)  # queued, not processed
    (tmp_path / "one.txt").write_text("command text")
    (tmp_path / "empty.txt").write_text("")
    out = io.StringIO()
    call_command("ingest", str(tmp_path), "--kb=cli", "--owner=alice", "--no-wait", stdout=out)
    assert Document.objects.filter(knowledge_base__name="cli").count() == 1
    assert "REFUSED empty.txt: the file is empty" in out.getvalue()
    via = AuditEvent.objects.filter(action="document.upload", object_label="one.txt").get()
    assert via.details == {"via": "manage.py ingest"}
