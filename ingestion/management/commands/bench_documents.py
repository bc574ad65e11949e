"""manage.py bench_documents [--documents 10000] [--chunks-per-document 100] [--json OUT]

Response times of the pages and API endpoints that list a knowledge base's documents, at
ten thousand documents and a million chunks (issue #15 part 3): the portal page (first and
a later page, a search, a status filter, a sort), the documents API with the same variants,
the portal's progress poll, the knowledge-base list (page and API) and one document's
chunk list (page and API). Requests go through Django's test Client signed in as the
owner, so every middleware, permission check and template is in the time; no network.

The rows are synthetic and bulk-loaded with COPY (no embeddings: no listing reads them);
the data is kept for the next run (--drop removes it). The load average is recorded before
and after measuring: the figures are only as quiet as the machine was.
"""

from __future__ import annotations

import io
import json
import os
import time
from datetime import timedelta

import numpy as np
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection, reset_queries, transaction
from django.test import Client, override_settings
from django.utils import timezone

from ingestion.models import DocumentStatus, KnowledgeBase
from retrieval.evaluation import percentile

OWNER = "bench-documents-owner"
KB_NAME = "bench-documents"
TOPICS = ("report", "invoice", "minutes", "policy", "manual", "contract", "notes", "plan")
EXTENSIONS = ("pdf", "docx", "md", "xlsx", "html", "txt")
# Mostly ready, as in a knowledge base in use; a few failed and a few still in the queue.
STATUS_WEIGHTS = {
    DocumentStatus.READY: 0.93,
    DocumentStatus.FAILED: 0.04,
    DocumentStatus.QUEUED: 0.02,
    DocumentStatus.EMBEDDING: 0.01,
}


class Command(BaseCommand):
    help = "Benchmark the documents list, its API and progress poll at 10k documents."

    def add_arguments(self, parser):
        parser.add_argument("--documents", type=int, default=10_000)
        parser.add_argument("--chunks-per-document", type=int, default=100)
        parser.add_argument("--repeat", type=int, default=20, help="timed requests per case")
        parser.add_argument("--json", dest="json_out", default=None)
        parser.add_argument("--drop", action="store_true", help="remove the data and stop")

    def handle(self, *args, **options):
        owner, _ = get_user_model().objects.get_or_create(username=OWNER)
        if options["drop"]:
            for kb in KnowledgeBase.objects.filter(owner=owner, name=KB_NAME):
                with connection.cursor() as cursor:
                    cursor.execute(
                        "DELETE FROM ingestion_chunk WHERE knowledge_base_id = %s", [kb.pk]
                    )
                kb.delete()
            self.stdout.write("dropped")
            return
        n_docs, per_doc = options["documents"], options["chunks_per_document"]
        kb = self._dataset(owner, n_docs, per_doc)
        load_before = os.getloadavg()
        rows = self._measure(owner, kb, options["repeat"])
        load_after = os.getloadavg()
        result = {
            "documents": n_docs,
            "chunks": n_docs * per_doc,
            "repeat": options["repeat"],
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in load_after],
            "cpus": os.cpu_count(),
            "rows": rows,
        }
        self._table(result)
        if options["json_out"]:
            with open(options["json_out"], "w") as out:
                json.dump(result, out, indent=2)

    # --- the data ---------------------------------------------------------------------------

    def _dataset(self, owner, n_docs: int, per_doc: int) -> KnowledgeBase:
        kb = KnowledgeBase.objects.filter(owner=owner, name=KB_NAME).first()
        if kb is not None:
            have_docs = kb.documents.count()
            have_chunks = kb.chunks.count()
            if have_docs == n_docs and have_chunks == n_docs * per_doc:
                self.stdout.write(f"reusing {have_docs} documents, {have_chunks} chunks")
                return kb
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM ingestion_chunk WHERE knowledge_base_id = %s", [kb.pk])
            kb.delete()
        kb = KnowledgeBase.objects.create(owner=owner, name=KB_NAME)
        rng = np.random.default_rng(15)
        now = timezone.now()
        t0 = time.perf_counter()
        statuses = rng.choice(
            list(STATUS_WEIGHTS), size=n_docs, p=np.array(list(STATUS_WEIGHTS.values()))
        )
        with transaction.atomic(), connection.cursor() as cursor:
            buffer = io.StringIO()
            for d in range(n_docs):
                name = f"{TOPICS[d % len(TOPICS)]}-{d:05d}.{EXTENSIONS[d % len(EXTENSIONS)]}"
                status = statuses[d]
                progress = 100 if status in ("ready", "failed") else 40
                pages = int(rng.integers(1, 400))
                size = int(rng.integers(2_000, 20_000_000))
                # One document a minute, the newest now: dates sort as uploads would.
                created = (now - timedelta(minutes=n_docs - d)).isoformat()
                buffer.write(
                    f"{kb.pk}\t\t{name}\t\t\t{size}\tbench-doc-{d:08d}\t{status}\t{progress}"
                    f"\t\t{pages}\ten\t\t{{}}\t\t\\N\t0\tf\t{{}}\t{{}}\tapproved\t\t\\N"
                    f"\t{created}\t{created}\n"
                )
            buffer.seek(0)
            with cursor.copy(
                "COPY ingestion_document (knowledge_base_id, file, original_name, source_url, "
                "mime_type, size, content_hash, status, progress, error, page_count, language, "
                "ingest_signature, stats, task_id, heartbeat_at, interruptions, restricted, "
                "tags, meta, review_status, review_reason, reviewed_at, created_at, "
                "updated_at) FROM STDIN"
            ) as copy:
                copy.write(buffer.getvalue())
            self.stdout.write(f"{n_docs} documents in {time.perf_counter() - t0:.1f}s")
            cursor.execute(
                "SELECT id FROM ingestion_document WHERE knowledge_base_id = %s ORDER BY id",
                [kb.pk],
            )
            doc_ids = [row[0] for row in cursor.fetchall()]
            # Chunks in batches of documents: a million rows never sit in memory at once.
            batch = max(1, 100_000 // per_doc)
            for start in range(0, len(doc_ids), batch):
                buffer = io.StringIO()
                for doc_id in doc_ids[start : start + batch]:
                    for o in range(per_doc):
                        text = f"Passage {o} of document {doc_id}: synthetic text for timing."
                        buffer.write(f"{doc_id}\t{kb.pk}\t{o}\t{text}\t12\t\t\ttext\t\tf\t\t0\n")
                with cursor.copy(
                    "COPY ingestion_chunk (document_id, knowledge_base_id, ordinal, text, "
                    "token_count, heading_path, sheet, kind, language, is_parent, search_text, "
                    "search_length) FROM STDIN"
                ) as copy:
                    copy.write(buffer.getvalue())
                self.stdout.write(
                    f"  chunks of {start + batch} documents, {time.perf_counter() - t0:.0f}s"
                )
        # What autovacuum does soon after a bulk insert (PostgreSQL 13+ vacuums on inserts):
        # statistics for the planner, and the visibility map that index-only counts need.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM (ANALYZE) ingestion_document, ingestion_chunk")
        self.stdout.write(f"loaded in {time.perf_counter() - t0:.0f}s")
        return kb

    # --- the timings ------------------------------------------------------------------------

    def _cases(self, kb, token: str) -> list[tuple[str, str, dict]]:
        doc = kb.documents.filter(status=DocumentStatus.READY).order_by("pk").first()
        first_page = list(
            kb.documents.order_by("-created_at", "-pk").values_list("pk", flat=True)[:50]
        )
        ids = ",".join(map(str, first_page))
        api = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        page = f"/kb/{kb.pk}/"
        docs_api = f"/api/v1/knowledge-bases/{kb.pk}/documents"
        return [
            ("page: first", page, {}),
            ("page: page 100", page + "?page=100", {}),
            ("page: search 'invoice-01'", page + "?q=invoice-01", {}),
            ("page: status failed", page + "?status=failed", {}),
            ("page: sort name", page + "?sort=name", {}),
            ("page: sort -size, page 50", page + "?sort=-size&page=50", {}),
            ("api: first 50", docs_api + "?limit=50", api),
            ("api: offset 4950", docs_api + "?limit=50&offset=4950", api),
            ("api: q=invoice-01", docs_api + "?limit=50&q=invoice-01", api),
            ("api: status=failed", docs_api + "?limit=50&status=failed", api),
            ("api: sort=name", docs_api + "?limit=50&sort=name", api),
            ("api: sort=-pages offset 5000", docs_api + "?limit=50&sort=-pages&offset=5000", api),
            ("poll: 50 ids", f"/kb/{kb.pk}/documents.json?ids={ids}", {}),
            ("poll: feed page 1", f"/kb/{kb.pk}/documents.json", {}),
            ("kb list page", "/kb/", {}),
            ("api: kb list", "/api/v1/knowledge-bases", api),
            ("document view (chunks p1)", f"/documents/{doc.pk}/view", {}),
            ("document view (chunks p2)", f"/documents/{doc.pk}/view?page=2", {}),
            ("api: document chunks", f"/api/v1/documents/{doc.pk}/chunks", api),
        ]

    @override_settings(ALLOWED_HOSTS=["*"], DEBUG=False)
    def _measure(self, owner, kb, repeat: int) -> list[dict]:
        from django.db import connection as db

        from ragapp.models import ApiToken

        client = Client()
        client.force_login(owner)
        token_row, token = ApiToken.issue(owner, "bench_documents")
        rows = []
        try:
            for label, url, headers in self._cases(kb, token):
                for _ in range(2):  # warm: caches, prepared plans, lazy imports
                    response = client.get(url, **headers)
                    if response.status_code != 200:
                        raise SystemExit(f"{label}: {url} answered {response.status_code}")
                times, queries = [], 0
                for _ in range(repeat):
                    reset_queries()
                    db.force_debug_cursor = True
                    t0 = time.perf_counter()
                    client.get(url, **headers)
                    times.append((time.perf_counter() - t0) * 1000)
                    queries = len(db.queries)
                    db.force_debug_cursor = False
                rows.append(
                    {
                        "case": label,
                        "url": url if len(url) < 90 else url[:87] + "...",
                        "p50_ms": round(percentile(times, 50), 1),
                        "p95_ms": round(percentile(times, 95), 1),
                        "queries": queries,
                    }
                )
                self.stdout.write(f"  {label}: p50 {rows[-1]['p50_ms']} ms")
        finally:
            token_row.delete()
        return rows

    def _table(self, result: dict) -> None:
        self.stdout.write(
            f"\n{result['documents']} documents, {result['chunks']} chunks; "
            f"{result['repeat']} requests per case; load average before "
            f"{result['load_before']}, after {result['load_after']} ({result['cpus']} CPUs)\n"
        )
        self.stdout.write(f"{'case':34} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8}")
        for row in result["rows"]:
            self.stdout.write(
                f"{row['case']:34} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['queries']:>8}"
            )
