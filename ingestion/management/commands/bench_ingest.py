"""manage.py bench_ingest PATH... [--json OUT] [--embedder NAME ...] [--keep]

Ingests files through the real pipeline (parse, chunk, embed, store: the same service the
Celery task runs, here in-process so that one process's time and memory are measured) and
prints per format: files, pages, chunks, seconds per stage, pages per minute, chunks per
second; then the embedder alone on the same chunk texts, for comparison.
"""

from __future__ import annotations

import json
import resource
import time
from collections import defaultdict
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from tqdm import tqdm

from ingestion.management.commands.ingest import iter_files
from ingestion.models import Chunk, DocumentStatus, KnowledgeBase
from ingestion.services import (
    UploadRejected,
    document_create,
    documents_ingest_batch,
    knowledge_base_delete,
)
from retrieval.backends import get_embedder

STAGES = ("parse", "chunk", "embed", "store")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Command(BaseCommand):
    help = "Benchmark ingestion throughput per format on real files."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument("--embedder", action="append", dest="embedders")
        parser.add_argument("--json", dest="json_out")
        parser.add_argument("--keep", action="store_true", help="keep the knowledge base")

    def handle(self, *args, **options):
        files = list(iter_files(options["paths"]))
        if not files:
            raise CommandError("no files found")
        embedders = options["embedders"] or list(settings.RAG_DEFAULT_EMBEDDERS)
        User = get_user_model()
        owner, _ = User.objects.get_or_create(
            username="rag-benchmark", defaults={"is_active": False}
        )
        kb = KnowledgeBase.objects.create(
            owner=owner, name=f"bench {time.strftime('%Y-%m-%d %H:%M:%S')}", embedders=embedders
        )
        # Load the models before timing: a worker process loads them once, not per file.
        for name in embedders:
            get_embedder(name).embed_documents(["warm up"])

        try:
            report = self._bench(kb, files)
        finally:
            if not options["keep"]:
                knowledge_base_delete(knowledge_base=kb)
        self._print(report)
        if options["json_out"]:
            Path(options["json_out"]).write_text(json.dumps(report, indent=2, ensure_ascii=False))
            self.stdout.write(f"Wrote {options['json_out']}")

    def _bench(self, kb, files) -> dict:
        entries, documents = [], {}
        for path in files:
            try:
                with open(path, "rb") as handle, transaction.atomic():
                    result = document_create(
                        knowledge_base=kb, fileobj=handle, name=path.name, enqueue=False
                    )
            except UploadRejected as exc:
                entries.append({"path": str(path), "status": "refused", "error": str(exc)})
                continue
            if not result.created:
                entries.append({"path": str(path), "status": "duplicate", "error": result.error})
                continue
            documents[result.document.pk] = path

        t_start = time.perf_counter()
        per_file_seconds = {}
        # One document at a time, as a worker does, so per-file times are real.
        for doc_id in tqdm(list(documents), desc="ingesting", unit="file", file=self.stderr):
            t0 = time.perf_counter()
            documents_ingest_batch(document_ids=[doc_id])
            per_file_seconds[doc_id] = time.perf_counter() - t0
        wall = time.perf_counter() - t_start

        formats: dict[str, dict] = defaultdict(
            lambda: {
                "files": 0,
                "failed": 0,
                "pages": 0,
                "chunks": 0,
                "seconds": 0.0,
                **{s: 0.0 for s in STAGES},
            }
        )
        stages_total = dict.fromkeys(STAGES, 0.0)
        for document in kb.documents.all():
            path = documents[document.pk]
            fmt = path.suffix.lower().lstrip(".") or "none"
            row = formats[fmt]
            row["files"] += 1
            seconds = document.stats.get("seconds", {}) if document.stats else {}
            chunks = (document.stats or {}).get("chunks", 0)
            if document.status == DocumentStatus.FAILED:
                row["failed"] += 1
            row["pages"] += document.page_count or 0
            row["chunks"] += chunks
            row["seconds"] += per_file_seconds[document.pk]
            for stage in STAGES:
                row[stage] += seconds.get(stage, 0.0)
                stages_total[stage] += seconds.get(stage, 0.0)
            entries.append(
                {
                    "path": str(path),
                    "status": document.status,
                    "error": document.error,
                    "pages": document.page_count,
                    "chunks": chunks,
                    "seconds": round(per_file_seconds[document.pk], 3),
                }
            )

        texts = [c.embed_text for c in Chunk.objects.filter(knowledge_base=kb, is_parent=False)]
        t0 = time.perf_counter()
        for name in kb.embedders:
            embedder = get_embedder(name)
            for start in range(0, len(texts), 64):
                embedder.embed_documents(texts[start : start + 64])
        embed_alone = time.perf_counter() - t0
        total_chunks = len(texts)
        text_layer = [f for f in formats if f not in {"png", "jpg", "jpeg"}]
        return {
            "files": entries,
            "formats": {k: _rounded(v) for k, v in sorted(formats.items())},
            "text_layer_formats": text_layer,
            "stages": {k: round(v, 2) for k, v in stages_total.items()},
            "wall_seconds": round(wall, 2),
            "chunks": total_chunks,
            "pipeline_chunks_per_s": round(total_chunks / wall, 2) if wall else 0.0,
            "embedder_chunks_per_s": round(total_chunks / embed_alone, 2) if embed_alone else 0.0,
            "embedders": list(kb.embedders),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }

    def _print(self, report: dict) -> None:
        header = (
            f"{'format':<7} {'files':>5} {'fail':>4} {'pages':>6} {'chunks':>6} "
            + " ".join(f"{s + ' s':>8}" for s in STAGES)
            + f" {'total s':>8} {'pages/min':>9} {'chunks/s':>8}"
        )
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        for fmt, row in report["formats"].items():
            ppm = row["pages"] / row["seconds"] * 60 if row["seconds"] and row["pages"] else 0
            cps = row["chunks"] / row["seconds"] if row["seconds"] else 0
            self.stdout.write(
                f"{fmt:<7} {row['files']:>5} {row['failed']:>4} {row['pages']:>6} "
                f"{row['chunks']:>6} "
                + " ".join(f"{row[s]:>8.2f}" for s in STAGES)
                + f" {row['seconds']:>8.2f} {ppm:>9.0f} {cps:>8.1f}"
            )
        self.stdout.write(
            f"\nall: {report['chunks']} chunks in {report['wall_seconds']}s; pipeline "
            f"{report['pipeline_chunks_per_s']} chunks/s vs embedder alone "
            f"{report['embedder_chunks_per_s']} chunks/s ({', '.join(report['embedders'])}); "
            f"peak RSS {report['peak_rss_mb']} MB"
        )
        for entry in report["files"]:
            if entry["status"] not in (DocumentStatus.READY,):
                self.stdout.write(f"{entry['status'].upper()} {entry['path']}: {entry['error']}")


def _rounded(row: dict) -> dict:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
