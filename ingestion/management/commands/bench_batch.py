"""manage.py bench_batch [--files N] [--json OUT] [--start-worker] [--interval S] [--keep]

Uploads N small generated files in one batch through the real upload service (the one the
portal and the API use), lets the Celery workers ingest them, and measures the time until
every document is ready or failed (documents per minute, chunks per second, against the
embedders alone on the same chunk texts, under the same page load and without it).
Meanwhile it times the knowledge base page, the API's document list and the portal's
progress poll every `--interval` seconds and reports their p50/p95/max during the batch:
the UI and the API must stay responsive while workers are busy.

Workers: `make run` starts them; or pass --start-worker to start one here (the command of
`make run`, RAG_WORKER_CONCURRENCY processes), stopped at the end. Requests go through
Django's test client in this process (the views' real queries against the same database
the workers write to), not through a web server.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections, connection
from django.test import Client
from django.urls import reverse
from django.utils import lorem_ipsum

from ingestion.models import Chunk, Document, DocumentStatus, KnowledgeBase
from ingestion.services import documents_upload, knowledge_base_delete
from retrieval.backends import get_embedder

DONE = (DocumentStatus.READY, DocumentStatus.FAILED)
EMBED_PASSES = 3


def small_files(count: int, *, seed: int = 15) -> list[tuple[str, bytes]]:
    """`count` distinct small documents (txt, md, html in turn; 2 to 8 paragraphs each)."""
    rng = random.Random(seed)
    random.seed(seed)  # lorem_ipsum draws from the module's generator
    files = []
    for i in range(count):
        paragraphs = lorem_ipsum.paragraphs(rng.randint(2, 8), common=False)
        title = f"Note {i}"
        kind = ("txt", "md", "html")[i % 3]
        if kind == "txt":
            text = title + "\n\n" + "\n\n".join(paragraphs)
        elif kind == "md":
            text = f"# {title}\n\n" + "\n\n".join(
                f"## Part {j}\n\n{p}" for j, p in enumerate(paragraphs)
            )
        else:
            body = "".join(f"<p>{p}</p>" for p in paragraphs)
            head = f"<html><head><title>{title}</title></head>"
            text = f"{head}<body><h1>{title}</h1>{body}</body></html>"
        files.append((f"note-{i:05d}.{kind}", f"{text}\n".encode()))
    return files


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return {
        "n": len(values),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(pick(0.95) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


class _Prober:
    """Times the pages a user and an API client open during the batch, from a thread."""

    def __init__(self, *, kb: KnowledgeBase, user, token: str, interval: float) -> None:
        self.interval = interval
        self.stopped = threading.Event()
        self.timings: dict[str, list[float]] = {"kb_page": [], "api_list": [], "poll": []}
        self.errors: list[str] = []
        self.kb, self.user, self.token = kb, user, token
        self.thread = threading.Thread(target=self._run, name="bench-probe", daemon=True)

    def _run(self) -> None:
        browser = Client()
        browser.force_login(self.user)
        api = Client(HTTP_AUTHORIZATION=f"Bearer {self.token}")
        kb_page = reverse("kb_detail", args=[self.kb.pk])
        poll = reverse("kb_documents", args=[self.kb.pk])
        api_list = f"/api/v1/knowledge-bases/{self.kb.pk}/documents"
        try:
            while not self.stopped.wait(self.interval):
                # The portal polls the ids on its page (the newest 20 by default).
                ids = list(
                    Document.objects.filter(knowledge_base=self.kb)
                    .order_by("-created_at")
                    .values_list("pk", flat=True)[:20]
                )
                for name, client, url, params in (
                    ("kb_page", browser, kb_page, {}),
                    ("api_list", api, api_list, {}),
                    ("poll", browser, poll, {"ids": ",".join(map(str, ids))}),
                ):
                    t0 = time.perf_counter()
                    response = client.get(url, params)
                    self.timings[name].append(time.perf_counter() - t0)
                    if response.status_code != 200:
                        self.errors.append(f"{name}: HTTP {response.status_code}")
        finally:
            connection.close()

    def __enter__(self) -> _Prober:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()


class Command(BaseCommand):
    help = "Upload N small files in one batch and measure ingestion and page latency."

    def add_arguments(self, parser):
        parser.add_argument("--files", type=int, default=1000)
        parser.add_argument("--json", dest="json_out")
        parser.add_argument("--interval", type=float, default=0.5)
        parser.add_argument("--timeout", type=float, default=3600)
        parser.add_argument("--start-worker", action="store_true")
        parser.add_argument("--keep", action="store_true", help="keep the knowledge base")

    def handle(self, *args, **options):
        from ragapp.models import ApiToken

        User = get_user_model()
        user, _ = User.objects.get_or_create(username="rag-benchmark-batch")
        kb = KnowledgeBase.objects.create(
            owner=user,
            name=f"batch bench {time.strftime('%Y-%m-%d %H:%M:%S')}",
            embedders=list(settings.RAG_DEFAULT_EMBEDDERS),
        )
        token, raw = ApiToken.issue(user, "bench_batch")
        worker = self._start_worker() if options["start_worker"] else None
        try:
            report = self._bench(kb, user, raw, options)
        finally:
            if worker is not None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
            token.delete()
            if not options["keep"]:
                knowledge_base_delete(knowledge_base=kb)
        self._print(report)
        if options["json_out"]:
            Path(options["json_out"]).write_text(json.dumps(report, indent=2))
            self.stdout.write(f"Wrote {options['json_out']}")

    def _start_worker(self) -> subprocess.Popen:
        from ragapp.celery import app
        from ragapp.devservers import worker_command

        proc = subprocess.Popen(
            worker_command(),
            cwd=settings.BASE_DIR,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise CommandError(f"the celery worker exited with {proc.returncode}")
            if app.control.ping(timeout=0.5):
                return proc
        os.killpg(proc.pid, signal.SIGTERM)
        raise CommandError("the celery worker did not answer")

    def _warm_workers(self, user) -> None:
        """A few documents in a throwaway knowledge base first, untimed: a worker process
        loads its models in its first minute (ragapp.warmup), a running `make run` worker
        has long done so, and that is what is measured."""
        from ragapp.devservers import worker_concurrency

        kb = KnowledgeBase.objects.create(
            owner=user, name="batch bench warm-up", embedders=list(settings.RAG_DEFAULT_EMBEDDERS)
        )
        try:
            count = 2 * worker_concurrency()
            files = small_files(count, seed=0)
            outcomes = documents_upload(
                knowledge_base=kb,
                files=((name, SimpleUploadedFile(name, data)) for name, data in files),
                uploaded_by=user,
            )
            rows = Document.objects.filter(pk__in=[o.document.pk for o in outcomes])
            deadline = time.monotonic() + 600
            while rows.exclude(status__in=DONE).exists() and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            knowledge_base_delete(knowledge_base=kb)

    def _bench(self, kb, user, token: str, options) -> dict:
        from ragapp.celery import app

        if not app.control.ping(timeout=2):
            raise CommandError("no Celery worker answers: run `make run`, or pass --start-worker")
        self._warm_workers(user)
        files = small_files(options["files"])
        with _Prober(kb=kb, user=user, token=token, interval=options["interval"]) as prober:
            t_start = time.perf_counter()
            outcomes = documents_upload(
                knowledge_base=kb,
                files=((name, SimpleUploadedFile(name, data)) for name, data in files),
                uploaded_by=user,
            )
            upload_seconds = time.perf_counter() - t_start
            ids = [o.document.pk for o in outcomes if o.accepted]
            rows = Document.objects.filter(pk__in=ids)
            deadline = time.monotonic() + options["timeout"]
            while rows.exclude(status__in=DONE).exists():
                if time.monotonic() > deadline:
                    raise CommandError("timed out waiting for the documents")
                time.sleep(1)
                close_old_connections()
            wall = time.perf_counter() - t_start
        counts = {
            s: rows.filter(status=s).count() for s in (DocumentStatus.READY, DocumentStatus.FAILED)
        }
        texts = [c.embed_text for c in Chunk.objects.filter(knowledge_base=kb, is_parent=False)]
        for name in kb.embedders:  # loading the models is not embedding time
            get_embedder(name).embed_documents(["warm up"])

        def embed_alone(times: int) -> list[float]:
            passes = []
            for _ in range(times):
                t0 = time.perf_counter()
                for name in kb.embedders:
                    embedder = get_embedder(name)
                    for start in range(0, len(texts), 64):
                        embedder.embed_documents(texts[start : start + 64])
                passes.append(time.perf_counter() - t0)
            return passes

        # The median of three passes: one pass on a shared machine moved the ratio by +-0.05.
        # The ratio compares like with like: the embedders alone run under the same page
        # load as the batch did (the probes take about a tenth of two cores, which would
        # otherwise count against the pipeline only); one unloaded pass is reported too.
        with _Prober(kb=kb, user=user, token=token, interval=options["interval"]):
            passes = embed_alone(EMBED_PASSES)
        unloaded = embed_alone(1)
        alone, alone_unloaded = statistics.median(passes), statistics.median(unloaded)
        workers = sum(len(v) for v in (app.control.inspect().stats() or {}).values()) or None
        return {
            "files": len(files),
            "accepted": len(ids),
            "ready": counts[DocumentStatus.READY],
            "failed": counts[DocumentStatus.FAILED],
            "chunks": len(texts),
            "upload_seconds": round(upload_seconds, 2),
            "wall_seconds": round(wall, 2),
            "documents_per_minute": round(len(ids) / wall * 60, 1) if wall else 0.0,
            "pipeline_chunks_per_s": round(len(texts) / wall, 2) if wall else 0.0,
            "embedder_chunks_per_s": round(len(texts) / alone, 2) if alone else 0.0,
            "embedder_passes_s": [round(p, 2) for p in passes],
            "ratio": round(alone / wall, 3) if wall else 0.0,
            "embedder_unloaded_chunks_per_s": (
                round(len(texts) / alone_unloaded, 2) if alone_unloaded else 0.0
            ),
            "embedder_unloaded_passes_s": [round(p, 2) for p in unloaded],
            "ratio_to_unloaded": round(alone_unloaded / wall, 3) if wall else 0.0,
            "embedders": list(kb.embedders),
            "worker_nodes": workers,
            "latency": {k: percentiles(v) for k, v in prober.timings.items()},
            "probe_errors": prober.errors[:20],
            "load_average": list(os.getloadavg()),
        }

    def _print(self, r: dict) -> None:
        self.stdout.write(
            f"{r['accepted']}/{r['files']} files accepted; {r['ready']} ready, {r['failed']} "
            f"failed; {r['chunks']} chunks\nupload {r['upload_seconds']}s; all done in "
            f"{r['wall_seconds']}s: {r['documents_per_minute']} documents/min, "
            f"{r['pipeline_chunks_per_s']} chunks/s\nembedders alone, one process, median of "
            f"{EMBED_PASSES}, under the same page load: {r['embedder_chunks_per_s']} chunks/s, "
            f"ratio {r['ratio']}; without it (one pass): "
            f"{r['embedder_unloaded_chunks_per_s']} chunks/s, ratio {r['ratio_to_unloaded']}"
        )
        self.stdout.write(
            f"{'during the batch':<18} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"
        )
        for name, row in r["latency"].items():
            self.stdout.write(
                f"{name:<18} {row['n']:>5} {row.get('p50_ms', 0):>8} {row.get('p95_ms', 0):>8} "
                f"{row.get('max_ms', 0):>8}"
            )
        for error in r["probe_errors"]:
            self.stdout.write(f"probe error: {error}")
