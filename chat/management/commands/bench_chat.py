"""manage.py bench_chat PATH... --questions FILE [--llm fake|none|env] [--json OUT]

Builds a fresh knowledge base from PATH (files or folders, ingested in-process through the
real pipeline), asks every question of FILE (JSON lines with "question" and optionally
"page") through the chat service and prints p50/p95 per stage (condense, recall, rerank,
first token, total). With --llm fake a local OpenAI-compatible server answers instantly, so
the figures are our own overhead; with --llm none answers are extracts. When questions have
a "page", it also reports how often the first source is that page (citation accuracy).
"""

from __future__ import annotations

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.test import override_settings
from tqdm import tqdm

from chat.fake_llm import FakeLLM
from chat.management.commands.ask import run_question
from ingestion.management.commands.ingest import iter_files
from ingestion.models import KnowledgeBase
from ingestion.services import (
    document_create,
    documents_embed_for_rerank,
    documents_ingest_batch,
    knowledge_base_delete,
)
from textkit import percentile

STAGES = ("condense", "recall", "rerank", "first_token", "total")


class Command(BaseCommand):
    help = "Benchmark chat latency per stage and citation page accuracy."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument("--questions", required=True, action="append")
        parser.add_argument("--llm", choices=["fake", "none", "env"], default="fake")
        parser.add_argument("--limit", type=int, default=None)
        parser.add_argument("--json", dest="json_out")
        parser.add_argument("--keep", action="store_true")

    def handle(self, *args, **options):
        questions = []
        for path in options["questions"]:
            for line in Path(path).read_text(encoding="utf-8").splitlines():
                if line.strip():
                    questions.append(json.loads(line))
        questions = questions[: options["limit"]]
        if not questions:
            raise CommandError("no questions")
        User = get_user_model()
        owner, _ = User.objects.get_or_create(
            username="rag-benchmark", defaults={"is_active": False}
        )
        kb = KnowledgeBase.objects.create(owner=owner, name="bench chat")
        server = None
        try:
            ids = []
            for path in iter_files(options["paths"]):
                with open(path, "rb") as handle, transaction.atomic():
                    result = document_create(
                        knowledge_base=kb, fileobj=handle, name=path.name, enqueue=False
                    )
                if result.created:
                    ids.append(result.document.pk)
            with tqdm(total=2 * len(ids), desc="ingesting", file=self.stderr) as bar:
                documents_ingest_batch(document_ids=ids, progress=lambda *_: bar.update(1))
            # What a worker adds once they are ready: the second stage's e5 vectors.
            documents_embed_for_rerank(document_ids=ids)
            overrides = {}
            if options["llm"] == "fake":
                server = FakeLLM().start()
                server.reply = lambda messages: "This is what the passages say [1]."
                overrides = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "local"}
            elif options["llm"] == "none":
                overrides = {"OPENAI_BASE_URL": ""}
            with override_settings(**overrides):
                run_question(user=owner, knowledge_bases=[kb], question="warm up")
                report = self._run(kb, owner, questions)
        finally:
            if server:
                server.stop()
            if not options["keep"]:
                knowledge_base_delete(knowledge_base=kb)
        report["llm"] = options["llm"]
        self._print(report)
        if options["json_out"]:
            Path(options["json_out"]).write_text(json.dumps(report, indent=2, ensure_ascii=False))

    def _run(self, kb, owner, questions) -> dict:
        timings = {stage: [] for stage in STAGES}
        pages = hits = 0
        modes: dict[str, int] = {}
        misses = []
        for q in tqdm(questions, desc="asking", file=self.stderr):
            final = run_question(user=owner, knowledge_bases=[kb], question=q["question"])
            mode = str(final.get("mode", "error"))
            modes[mode] = modes.get(mode, 0) + 1
            for stage in STAGES:
                value = final.get("timings_ms", {}).get(stage)
                if value is not None:
                    timings[stage].append(value)
            if "page" in q:
                pages += 1
                sources = final.get("sources") or []
                got = sources[0]["page"] if sources else None
                if got == q["page"]:
                    hits += 1
                else:
                    misses.append({"id": q.get("id"), "expected": q["page"], "got": got})
        return {
            "questions": len(questions),
            "modes": modes,
            "stages_ms": {
                stage: {
                    "p50": round(percentile(values, 50), 1),
                    "p95": round(percentile(values, 95), 1),
                }
                for stage, values in timings.items()
                if values
            },
            "page_accuracy": round(hits / pages, 3) if pages else None,
            "page_questions": pages,
            "misses": misses,
        }

    def _print(self, report: dict) -> None:
        self.stdout.write(
            f"{report['questions']} questions, LLM: {report['llm']}, modes {report['modes']}"
        )
        self.stdout.write(f"{'stage':<12} {'p50 ms':>8} {'p95 ms':>8}")
        for stage, row in report["stages_ms"].items():
            self.stdout.write(f"{stage:<12} {row['p50']:>8} {row['p95']:>8}")
        if report["page_accuracy"] is not None:
            self.stdout.write(
                f"first source on the right page: {report['page_accuracy']:.3f} "
                f"({report['page_questions']} questions)"
            )
