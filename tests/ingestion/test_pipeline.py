"""Upload -> Celery worker -> parse, chunk, embed -> pgvector, end to end on real servers."""

import io
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from ingestion.models import Chunk, ChunkEmbedding, Document, DocumentStatus, Membership, Role
from tests.conftest import FIXTURES, ROOT, wait_for_documents

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

MARKDOWN_ZH = """# 数据库索引

索引是提高数据库性能的常用方法。索引使数据库服务器查找特定行的速度比没有索引时快得多。

## 多列索引

一个索引可以定义在表的多个列上。多列索引应该谨慎使用。
"""


def _upload(client, kb, *files):
    return client.post(
        f"/kb/{kb.pk}/upload",
        {"files": list(files)},
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
        HTTP_ACCEPT="application/json",
    )


@pytest.fixture
def editor_kb(make_user, make_kb, client):
    owner = make_user("owner")
    kb = make_kb(owner, "docs")
    client.force_login(owner)
    return kb


def test_batch_upload_ingests_good_files_and_fails_bad_ones_alone(
    celery_worker_process, editor_kb, client, settings
):
    settings.RAG_MAX_UPLOAD_BYTES = 2 * 1024 * 1024
    kb = editor_kb
    pdf = (FIXTURES / "libtasn1.pdf").read_bytes()
    files = [
        SimpleUploadedFile("manual.pdf", pdf, "application/pdf"),
        SimpleUploadedFile(
            "indexes.docx", (FIXTURES / "postgresql-indexes-intro.en.docx").read_bytes()
        ),
        SimpleUploadedFile("索引.md", MARKDOWN_ZH.encode("utf-8")),
        SimpleUploadedFile("empty.txt", b""),
        SimpleUploadedFile("broken.pdf", pdf[: len(pdf) // 3]),
        SimpleUploadedFile("image.pdf", b"\x89PNG\r\n\x1a\n" + b"\0" * 100),
        SimpleUploadedFile("program.exe", b"MZ..."),
        SimpleUploadedFile("huge.txt", b"a" * (3 * 1024 * 1024)),
    ]
    response = _upload(client, kb, *files)
    body = response.json()
    assert sorted(a["name"] for a in body["accepted"]) == sorted(
        ["manual.pdf", "indexes.docx", "索引.md", "broken.pdf", "image.pdf"]
    )
    refused = {r["name"]: r["error"] for r in body["refused"]}
    assert "not supported" in refused["program.exe"] and "program.exe" in refused["program.exe"]
    assert "larger than" in refused["huge.txt"]
    assert "is empty" in refused["empty.txt"]  # refused at once, not as a duplicate

    docs = wait_for_documents([a["id"] for a in body["accepted"]])
    by_name = {d.original_name: d for d in docs.values()}
    for name in ("manual.pdf", "indexes.docx", "索引.md"):
        assert by_name[name].status == DocumentStatus.READY, (name, by_name[name].error)
    assert by_name["broken.pdf"].status == DocumentStatus.FAILED and by_name["broken.pdf"].error
    assert by_name["image.pdf"].status == DocumentStatus.FAILED
    assert "PNG" in by_name["image.pdf"].error or "not a PDF" in by_name["image.pdf"].error

    # Citations need places: pages for the PDF, heading paths for the Markdown and DOCX.
    pdf_doc = by_name["manual.pdf"]
    assert pdf_doc.page_count == 36
    pages = set(Chunk.objects.filter(document=pdf_doc).values_list("page", flat=True))
    assert None not in pages and len(pages) > 20
    md = Chunk.objects.filter(document=by_name["索引.md"], is_parent=False)
    assert any("多列索引" in c.heading_path for c in md)
    assert by_name["索引.md"].language == "zh"
    assert Chunk.objects.filter(document=by_name["indexes.docx"]).exclude(heading_path="").exists()
    # Every child chunk has one vector per embedder of the knowledge base.
    children = Chunk.objects.filter(knowledge_base=kb, is_parent=False).count()
    vectors = ChunkEmbedding.objects.filter(knowledge_base=kb)
    assert vectors.filter(embedder__in=kb.embedders).count() == children * len(kb.embedders)
    # After "ready", a low-priority task adds the second-stage (e5) vectors, one per chunk.
    deadline = time.monotonic() + 180
    while vectors.filter(embedder="e5").count() < children and time.monotonic() < deadline:
        time.sleep(0.5)
    assert vectors.filter(embedder="e5").count() == children

    # The portal's status feed shows the same.
    feed = client.get(f"/kb/{kb.pk}/documents.json").json()["documents"]
    assert {d["name"]: d["status"] for d in feed}["manual.pdf"] == "ready"


def test_duplicate_content_is_detected_and_not_embedded_twice(
    celery_worker_process, editor_kb, client
):
    first = _upload(client, editor_kb, SimpleUploadedFile("a.md", MARKDOWN_ZH.encode())).json()
    again = _upload(client, editor_kb, SimpleUploadedFile("b.md", MARKDOWN_ZH.encode())).json()
    assert len(first["accepted"]) == 1 and not again["accepted"]
    assert "same content" in again["refused"][0]["error"]
    wait_for_documents([first["accepted"][0]["id"]])
    assert Document.objects.filter(knowledge_base=editor_kb).count() == 1


def test_viewer_cannot_upload(celery_worker_process, make_user, make_kb, client):
    owner, viewer = make_user("owner"), make_user("viewer")
    kb = make_kb(owner)
    Membership.objects.create(knowledge_base=kb, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    assert client.get(f"/kb/{kb.pk}/").status_code == 200
    assert _upload(client, kb, SimpleUploadedFile("a.txt", b"hello")).status_code == 404
    assert not Document.objects.exists()


def test_reingest_and_delete(celery_worker_process, editor_kb, client):
    body = _upload(client, editor_kb, SimpleUploadedFile("a.md", MARKDOWN_ZH.encode())).json()
    doc_id = body["accepted"][0]["id"]
    wait_for_documents([doc_id])
    before = list(Chunk.objects.filter(document_id=doc_id).values_list("text", flat=True))
    assert before
    client.post(f"/documents/{doc_id}/retry", HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    time.sleep(0.5)
    wait_for_documents([doc_id])
    after = list(Chunk.objects.filter(document_id=doc_id).values_list("text", flat=True))
    assert after == before  # replaced, not added

    path = Document.objects.get(pk=doc_id).file.path
    assert os.path.exists(path)
    client.post(f"/documents/{doc_id}/delete", HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    assert not Document.objects.filter(pk=doc_id).exists()
    assert not Chunk.objects.filter(document_id=doc_id).exists()
    assert not os.path.exists(path)


def test_a_killed_ingestion_leaves_no_partial_chunks_and_reruns_to_one_set(
    celery_worker_process, editor_kb
):
    from django.db import connection

    from ingestion.services import document_create

    text = "\n\n".join(f"Paragraph {i} explains index number {i} in detail." for i in range(1500))
    result = document_create(
        knowledge_base=editor_kb, fileobj=io.BytesIO(text.encode()), name="long.txt", enqueue=False
    )
    doc_id = result.document.pk
    env = dict(os.environ, RAG_TEST_DATABASE_NAME=connection.settings_dict["NAME"])
    code = f"from ingestion.services import document_ingest; document_ingest(document_id={doc_id})"
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while Document.objects.get(pk=doc_id).status != DocumentStatus.EMBEDDING:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the worker dies in the middle of the document
    proc.wait()
    assert Document.objects.get(pk=doc_id).status == DocumentStatus.EMBEDDING
    assert not Chunk.objects.filter(document_id=doc_id).exists()

    from ingestion.services import document_enqueue

    document_enqueue(document=result.document)  # what "retry" in the portal does
    wait_for_documents([doc_id])
    first = Chunk.objects.filter(document_id=doc_id).count()
    assert first > 0
    # A duplicate delivery of the same task changes nothing.
    from ingestion.tasks import ingest_document

    assert ingest_document.delay(doc_id).get(timeout=60) == "ready"
    assert Chunk.objects.filter(document_id=doc_id).count() == first
    children = Chunk.objects.filter(document_id=doc_id, is_parent=False).count()
    vectors = ChunkEmbedding.objects.filter(chunk__document_id=doc_id)
    assert vectors.filter(embedder__in=["minilm", "use"]).count() == children * 2


class _Page(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = (
            b"<html><head><title>Backup</title></head><body><nav>Home | Docs</nav>"
            b"<main><h1>Backup and restore</h1><p>Use pg_dump to back up a database.</p></main>"
            b"<footer>Copyright</footer></body></html>"
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_web_page_by_url(celery_worker_process, editor_kb, client, monkeypatch):
    monkeypatch.setenv("RAG_ALLOW_LOCAL_URLS", "1")  # the view's upfront URL check runs here too
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    ).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/backup.html"
        client.post(f"/kb/{editor_kb.pk}/add-url", {"url": url})
        doc = Document.objects.get(knowledge_base=editor_kb)
        doc = wait_for_documents([doc.pk])[doc.pk]
    finally:
        server.shutdown()
    assert doc.status == DocumentStatus.READY, doc.error
    texts = " ".join(Chunk.objects.filter(document=doc).values_list("text", flat=True))
    assert "pg_dump" in texts and "Copyright" not in texts


def test_ingest_command_runs_the_pipeline(celery_worker_process, make_user, tmp_path):
    make_user("boss", is_superuser=True, is_staff=True)
    (tmp_path / "sub").mkdir()
    (tmp_path / "notes.md").write_text(MARKDOWN_ZH, encoding="utf-8")
    (tmp_path / "sub" / "empty.txt").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "sub" / "fake.docx", "w") as z:
        z.writestr("hello.txt", "not a word document")
    # A truncated PDF passes the upload check (its first bytes are a PDF's) and fails in
    # the worker; an empty file and a ZIP named .docx are refused at upload.
    (tmp_path / "sub" / "broken.pdf").write_bytes((FIXTURES / "libtasn1.pdf").read_bytes()[:50000])
    out = io.StringIO()
    call_command("ingest", str(tmp_path), "--kb", "cli", stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    assert "1 ready, 1 failed, 2 refused" in text
    assert "REFUSED empty.txt" in text and "REFUSED fake.docx" in text
    assert "FAILED broken.pdf" in text


def test_ingest_command_fails_without_a_worker(make_user, tmp_path, monkeypatch):
    from celery import Celery
    from django.core.management.base import CommandError

    make_user("boss", is_superuser=True)
    (tmp_path / "a.txt").write_text("hello")
    silent = Celery("silent", broker="redis://127.0.0.1:1/0", set_as_current=False)
    monkeypatch.setattr("ragapp.health._app", lambda: silent)
    with pytest.raises(CommandError, match="broker"):
        call_command("ingest", str(tmp_path), "--kb", "cli", stdout=io.StringIO())
