"""The ingestion queue as users see it: separate training and ingestion workers, each queued
document's place in line and estimate, progress through parsing and embedding, the page count
as soon as parsing ends, and files refused at upload when their bytes say they cannot be read."""

import io
import os
import zipfile
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from ingestion.chunking import ChunkDraft
from ingestion.models import Document, DocumentStatus
from ingestion.selectors import queue_positions
from ingestion.services import (
    _claim,
    _parse_and_chunk,
    document_create,
    document_enqueue,
    embed_drafts,
)
from ragapp import devservers
from ragapp.models import ApiToken
from tests.conftest import FIXTURES, ROOT

HASHING = {"BACKEND": "retrieval.embedders.HashingEmbedder", "DIMENSION": 64, "OPTIONS": {}}


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def kb(owner, make_kb, settings):
    settings.RAG_EMBEDDERS = {**settings.RAG_EMBEDDERS, "hash": HASHING}
    return make_kb(owner, "docs", embedders=["hash"])


def _doc(kb, name, *, size, status=DocumentStatus.QUEUED, queued_ago=None, **fields):
    """A document row in a given state; `queued_ago`: when it joined the queue."""
    document = Document.objects.create(
        knowledge_base=kb,
        original_name=name,
        size=size,
        content_hash=f"hash-{kb.pk}-{name}",
        status=status,
        **fields,
    )
    if queued_ago is not None:
        Document.objects.filter(pk=document.pk).update(updated_at=timezone.now() - queued_ago)
    return document


def _finished(kb, name, *, size, seconds):
    """A ready document whose measured stage times add up to `seconds`."""
    return _doc(
        kb,
        name,
        size=size,
        status=DocumentStatus.READY,
        progress=100,
        stats={"seconds": {"parse": seconds / 2, "chunk": 0, "embed": seconds / 2, "store": 0}},
    )


# --- workers: training has its own queue and process ---------------------------------------


def test_ingestion_worker_takes_no_training_and_one_process_per_core(monkeypatch):
    monkeypatch.delenv("RAG_WORKER_CONCURRENCY", raising=False)
    argv = devservers.worker_command()
    assert argv[argv.index("-Q") + 1] == "celery,ingestion"
    assert argv[argv.index("--concurrency") + 1] == str(max(1, os.cpu_count() or 1))
    assert devservers.worker_command(concurrency=3)[argv.index("--concurrency") + 1] == "3"


def test_training_worker_runs_one_training_at_a_time():
    argv = devservers.training_worker_command()
    assert argv[argv.index("-Q") + 1] == "training"
    assert argv[argv.index("--concurrency") + 1] == "1"
    # Two workers on one host need their own node names.
    ingest = devservers.worker_command(concurrency=1)
    assert argv[argv.index("--hostname") + 1] != ingest[ingest.index("--hostname") + 1]


def test_worker_concurrency_setting_overrides_the_core_count():
    assert devservers.worker_concurrency({"RAG_WORKER_CONCURRENCY": "5"}) == 5
    assert devservers.worker_concurrency({"RAG_WORKER_CONCURRENCY": "0"}) == 1
    assert devservers.worker_concurrency({}) == max(1, os.cpu_count() or 1)
    with pytest.raises(SystemExit, match="RAG_WORKER_CONCURRENCY"):
        devservers.worker_concurrency({"RAG_WORKER_CONCURRENCY": "many"})


def test_make_run_starts_the_ingestion_and_the_training_worker(monkeypatch):
    started = {}

    class Recorder(devservers.Supervisor):
        def run(self, start, *, cleanup=lambda: None):
            self.run_step = lambda argv, capture=False: ""
            self.add = lambda name, argv: started.__setitem__(name, argv)
            self.wait_until = lambda predicate, timeout: True
            start(self)
            return 0

    monkeypatch.setattr(devservers, "Supervisor", Recorder)
    monkeypatch.setattr(devservers, "start_services", lambda **kwargs: [])
    monkeypatch.setattr(devservers, "_ensure_admin", lambda supervisor: None)
    assert devservers.run("127.0.0.1", 8000) == 0
    queues = sorted(argv[argv.index("-Q") + 1] for argv in started.values() if "worker" in argv)
    assert queues == ["celery,ingestion", "training"]


def test_docker_compose_has_a_separate_trainer():
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    worker = " ".join(services["worker"]["command"])
    assert "-Q celery,ingestion" in worker and "training" not in worker
    assert "RAG_WORKER_CONCURRENCY" in worker
    trainer = services["trainer"]["command"]
    assert trainer[trainer.index("-Q") + 1] == "training"
    assert trainer[trainer.index("--concurrency") + 1] == "1"
    assert services["trainer"]["build"] == services["worker"]["build"]


# --- queue position and estimate ----------------------------------------------------------


@pytest.mark.django_db
def test_positions_count_the_whole_site_queue_in_queued_order(kb, owner, make_kb):
    other = make_kb(owner, "other", embedders=["hash"])
    # Measured: 30 s for 4000 bytes (0.0075 s/byte); the quickest took 10 s.
    _finished(kb, "done-a.txt", size=1000, seconds=10)
    _finished(other, "done-b.txt", size=3000, seconds=20)
    # One worker slot busy, halfway through 4000 bytes: 15 s left.
    _doc(other, "running.pdf", size=4000, status=DocumentStatus.PARSING, progress=50)
    _doc(kb, "failed.pdf", size=999, status=DocumentStatus.FAILED)
    # Created in one order, queued in another: the queue order is what counts.
    third = _doc(kb, "third.pdf", size=8000, queued_ago=timedelta(minutes=1))
    first = _doc(other, "first.pdf", size=2000, queued_ago=timedelta(minutes=3))
    second = _doc(kb, "second.txt", size=100, queued_ago=timedelta(minutes=2))

    places = queue_positions(document_ids=[first.pk, second.pk, third.pk])
    assert {pk: p.position for pk, p in places.items()} == {first.pk: 1, second.pk: 2, third.pk: 3}
    # first: 15 s left on the running one + its own 2000 * 0.0075 = 15 s.
    assert places[first.pk].eta_seconds == pytest.approx(30)
    # second: + first's 15 s, and its own 100 bytes take the quickest time, 10 s.
    assert places[second.pk].eta_seconds == pytest.approx(40)
    assert places[third.pk].eta_seconds == pytest.approx(15 + 15 + 10 + 60)
    # Only queued documents have a place.
    ready = Document.objects.filter(status=DocumentStatus.READY).values_list("pk", flat=True)
    assert queue_positions(document_ids=list(ready)) == {}


@pytest.mark.django_db
def test_work_ahead_is_shared_by_the_busy_worker_slots(kb):
    _finished(kb, "done.txt", size=1000, seconds=10)  # 0.01 s/byte, at least 10 s
    _doc(kb, "a.pdf", size=4000, status=DocumentStatus.PARSING, progress=50)  # 20 s left
    _doc(kb, "b.pdf", size=4000, status=DocumentStatus.EMBEDDING, progress=75)  # 10 s left
    waiting = _doc(kb, "c.pdf", size=3000)
    place = queue_positions(document_ids=[waiting.pk])[waiting.pk]
    assert place.position == 1
    assert place.eta_seconds == pytest.approx((20 + 10) / 2 + 30)


@pytest.mark.django_db
def test_no_estimate_before_any_document_has_finished(kb):
    waiting = _doc(kb, "a.pdf", size=4000)
    place = queue_positions(document_ids=[waiting.pk])[waiting.pk]
    assert place.position == 1 and place.eta_seconds is None


@pytest.mark.django_db
def test_requeued_document_goes_to_the_end_of_the_line(kb):
    early = _doc(kb, "early.pdf", size=10, queued_ago=timedelta(minutes=5))
    later = _doc(kb, "later.pdf", size=10, queued_ago=timedelta(minutes=4))
    Document.objects.filter(pk=early.pk).update(status=DocumentStatus.FAILED)
    document_enqueue(document=early, force=True)  # "Re-ingest": queued now, behind `later`
    places = queue_positions(document_ids=[early.pk, later.pk])
    assert places[later.pk].position == 1 and places[early.pk].position == 2


@pytest.mark.django_db
def test_portal_feed_and_api_show_place_in_line_and_estimate(kb, owner, client):
    _finished(kb, "done.txt", size=1000, seconds=10)
    first = _doc(kb, "first.pdf", size=2000, queued_ago=timedelta(minutes=2))
    second = _doc(kb, "second.pdf", size=3000, queued_ago=timedelta(minutes=1))

    client.force_login(owner)
    feed = {d["name"]: d for d in client.get(f"/kb/{kb.pk}/documents.json").json()["documents"]}
    assert feed["first.pdf"]["queue_position"] == 1
    assert feed["second.pdf"]["queue_position"] == 2
    assert feed["second.pdf"]["eta_seconds"] == pytest.approx(20 + 30)
    assert feed["done.txt"]["queue_position"] is None and feed["done.txt"]["eta_seconds"] is None

    auth = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(owner, 't')[1]}"}
    one = client.get(f"/api/v1/documents/{second.pk}", **auth).json()
    assert one["queue_position"] == 2 and one["eta_seconds"] == pytest.approx(50)
    listing = client.get(f"/api/v1/knowledge-bases/{kb.pk}/documents", **auth).json()
    items = listing["items"] if isinstance(listing, dict) else listing
    by_id = {d["id"]: d for d in items}
    assert by_id[first.pk]["queue_position"] == 1
    assert by_id[first.pk]["eta_seconds"] == pytest.approx(20)


@pytest.mark.django_db
def test_portal_page_carries_the_translated_queue_labels(kb, owner, client):
    client.force_login(owner)
    html = client.get(f"/kb/{kb.pk}/").content.decode()
    assert 'data-label-in-line="#{n} in line"' in html and "data-label-about=" in html
    js = (ROOT / "static" / "js" / "portal.js").read_text()
    assert "d.queue_position" in js and "d.eta_seconds" in js


# --- progress and pages -------------------------------------------------------------------


@pytest.mark.django_db
def test_page_count_is_shown_once_parsing_ends_before_embedding(kb):
    pdf = (FIXTURES / "libtasn1.pdf").read_bytes()
    document = document_create(
        knowledge_base=kb, fileobj=io.BytesIO(pdf), name="manual.pdf", enqueue=False
    ).document
    work = _claim(document.pk, claim="test-run")
    seen = []
    work.progress.set = lambda percent, **kw: seen.append(int(percent))
    _parse_and_chunk(work)
    document.refresh_from_db()
    assert document.status == DocumentStatus.PARSING  # not embedded yet
    assert document.page_count == 36
    # Per page while parsing (the 0.5 s throttle is bypassed here), then chunking.
    assert len(set(seen)) > 20 and seen == sorted(seen) and seen[-1] == 48


def test_embedding_progress_moves_for_a_small_document(settings):
    settings.RAG_EMBEDDERS = {**settings.RAG_EMBEDDERS, "hash": HASHING}

    class KB:
        embedders = ["hash"]

    drafts = [
        ChunkDraft(text=f"passage number {i}", token_count=3, heading_path="") for i in range(30)
    ]
    seen = []
    vectors = embed_drafts(KB(), drafts, progress=seen.append)
    assert vectors["hash"].shape == (30, 64)
    assert len(seen) >= 3 and seen[-1] == 1.0 and seen == sorted(seen)


# --- refused at upload --------------------------------------------------------------------


def _zip_bytes():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("notes.txt", "hello")
    return buffer.getvalue()


MISLABELLED = {
    "archive.pdf": _zip_bytes(),
    "legacy.pdf": (FIXTURES / "datasets.xls").read_bytes(),  # an OLE (legacy Office) file
    "noise.pdf": bytes(range(256)) * 8,
    "noise.txt": b"\x00\x01\x02\x03" * 500,  # binary under a text name
    "archive.docx": _zip_bytes(),  # a plain ZIP, not a Word document
}


@pytest.mark.django_db
@pytest.mark.parametrize("in_memory", [True, False])
def test_mislabelled_files_are_refused_in_the_upload_answer(kb, owner, client, settings, in_memory):
    if not in_memory:
        settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # uploads land in a temporary file
    client.force_login(owner)
    good = {
        "manual.pdf": (FIXTURES / "two-column.en.pdf").read_bytes(),
        "intro.docx": (FIXTURES / "postgresql-indexes-intro.en.docx").read_bytes(),
        "sheet.xlsx": (FIXTURES / "datasets.xls").read_bytes(),  # xlrd reads it anyway
        "notes.txt": b"plain text",
    }
    files = [SimpleUploadedFile(n, b) for n, b in {**MISLABELLED, **good}.items()]
    body = client.post(
        f"/kb/{kb.pk}/upload",
        {"files": files},
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
        HTTP_ACCEPT="application/json",
    ).json()
    assert sorted(a["name"] for a in body["accepted"]) == sorted(good)
    refused = {r["name"]: r["error"] for r in body["refused"]}
    assert set(refused) == set(MISLABELLED)
    assert "ZIP" in refused["archive.pdf"] and "legacy Microsoft Office" in refused["legacy.pdf"]
    assert "not a valid PDF" in refused["noise.pdf"] and "binary" in refused["noise.txt"]
    assert "DOCX" in refused["archive.docx"]
    assert set(Document.objects.values_list("original_name", flat=True)) == set(good)


@pytest.mark.django_db
def test_api_answers_415_when_every_file_is_mislabelled(kb, owner, client):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(owner, 't')[1]}"}
    url = f"/api/v1/knowledge-bases/{kb.pk}/documents"
    response = client.post(
        url, {"files": [SimpleUploadedFile("archive.pdf", MISLABELLED["archive.pdf"])]}, **auth
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported"
    assert "ZIP" in response.json()["error"]["message"]
    mixed = client.post(
        url,
        {
            "files": [
                SimpleUploadedFile("noise.pdf", MISLABELLED["noise.pdf"]),
                SimpleUploadedFile("notes.txt", b"plain text"),
            ]
        },
        **auth,
    )
    assert mixed.status_code == 201
    body = mixed.json()
    assert [d["name"] for d in body["accepted"]] == ["notes.txt"]
    assert body["accepted"][0]["queue_position"] == 1
    assert "not a valid PDF" in body["refused"][0]["error"]
    assert not Document.objects.filter(original_name__in=["archive.pdf", "noise.pdf"]).exists()
