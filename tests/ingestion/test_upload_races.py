"""The same file uploaded many times at once, through the portal and the API, on the real
database: exactly one upload becomes a document, the others are refused as duplicates, no
request fails with a 500, and no stored file is left without its row. Empty files are
refused as empty (every empty file has the same hash)."""

import threading

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client

from ingestion.models import Document
from ragapp.models import ApiToken

N = 10
CONTENT = b"The same document, uploaded ten times at once.\n" * 50


@pytest.fixture(autouse=True)
def no_ingestion(monkeypatch):
    """These tests are about the uploads: their documents are not sent to the broker, where a
    Celery worker left running by an earlier test would claim them (SELECT ... FOR UPDATE)
    while this transactional test's database is being flushed, and deadlock with it."""
    sent = []
    monkeypatch.setattr(
        "ingestion.services._send_on_commit", lambda document_id, task_id: sent.append(document_id)
    )
    return sent


def stored_files(root) -> list:
    return [p for p in root.rglob("*") if p.is_file()]


def race(post) -> list:
    """Run `post(i)` in N threads released together; returns the responses."""
    barrier = threading.Barrier(N)
    responses: list = [None] * N

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            responses[i] = post(i)
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            responses[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return responses


@pytest.mark.django_db(transaction=True)
def test_portal_upload_race_accepts_one_and_refuses_the_rest(
    make_user, make_kb, settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path)
    user = make_user("racer")
    kb = make_kb(user)
    clients = []
    for _ in range(N):
        c = Client(raise_request_exception=False)
        c.force_login(user)
        clients.append(c)

    def post(i: int):
        upload = SimpleUploadedFile(f"copy{i}.txt", CONTENT, content_type="text/plain")
        return clients[i].post(
            f"/kb/{kb.pk}/upload", {"files": [upload]}, HTTP_X_REQUESTED_WITH="XMLHttpRequest"
        )

    responses = race(post)
    assert all(not isinstance(r, Exception) for r in responses), responses
    assert [r.status_code for r in responses] == [200] * N
    bodies = [r.json() for r in responses]
    assert sum(len(b["accepted"]) for b in bodies) == 1
    refused = [e for b in bodies for e in b["refused"]]
    assert len(refused) == N - 1
    assert all("same content as" in e["error"] for e in refused), refused
    assert Document.objects.filter(knowledge_base=kb).count() == 1
    assert len(stored_files(tmp_path)) == 1


@pytest.mark.django_db(transaction=True)
def test_api_upload_race_accepts_one_and_refuses_the_rest(make_user, make_kb, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    user = make_user("apiracer")
    kb = make_kb(user)
    raw = ApiToken.issue(user, "race")[1]
    settings.RAG_API_RATE_LIMIT_PER_MINUTE = 0

    def post(i: int):
        upload = SimpleUploadedFile(f"copy{i}.txt", CONTENT, content_type="text/plain")
        return Client(raise_request_exception=False).post(
            f"/api/v1/knowledge-bases/{kb.pk}/documents",
            {"files": [upload]},
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )

    responses = race(post)
    assert all(not isinstance(r, Exception) for r in responses), responses
    assert [r.status_code for r in responses] == [201] * N, [r.content for r in responses]
    bodies = [r.json() for r in responses]
    assert sum(len(b["accepted"]) for b in bodies) == 1
    refused = [e for b in bodies for e in b["refused"]]
    assert len(refused) == N - 1 and all("same content as" in e["error"] for e in refused)
    assert Document.objects.filter(knowledge_base=kb).count() == 1
    assert len(stored_files(tmp_path)) == 1


@pytest.mark.django_db
def test_empty_file_is_refused_as_empty_not_as_a_duplicate(
    client, make_user, make_kb, settings, tmp_path
):
    settings.MEDIA_ROOT = str(tmp_path)
    user = make_user("empty")
    kb = make_kb(user)
    client.force_login(user)
    raw = ApiToken.issue(user, "t")[1]
    for name in ("empty.pdf", "other-empty.txt"):
        response = client.post(
            f"/kb/{kb.pk}/upload",
            {"files": [SimpleUploadedFile(name, b"")]},
            HTTP_X_REQUESTED_WITH="XMLHttpRequest",
        )
        assert response.status_code == 200
        (refused,) = response.json()["refused"]
        assert "empty" in refused["error"] and "same content" not in refused["error"]
        api = client.post(
            f"/api/v1/knowledge-bases/{kb.pk}/documents",
            {"files": [SimpleUploadedFile(name, b"")]},
            HTTP_AUTHORIZATION=f"Bearer {raw}",
        )
        assert api.status_code == 201
        assert api.json()["accepted"] == []
        assert "is empty" in api.json()["refused"][0]["error"]
    assert not Document.objects.filter(knowledge_base=kb).exists()
    assert stored_files(tmp_path) == []
