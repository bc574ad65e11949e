"""FAQ direct-match latency as a knowledge base's FAQ grows.

    manage.py bench_faq_scale [--entries 1000 10000] [--questions 20] [--embedder NAME]
                              [--json out.json]

For each size, a throwaway knowledge base gets that many FAQ entries with random unit
question vectors (as many dimensions as the embedder has; writing real ones would time the
model, not the match), then the same questions, none equal to an entry, go through
curation.faq.faq_match: the path of every chat question in a knowledge base with FAQ
entries, question embedding included. Prints p50/p95 per size; the knowledge bases are
deleted at the end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from curation.faq import faq_match
from curation.models import FaqEntry
from ingestion.models import KnowledgeBase
from ingestion.services import knowledge_base_delete
from retrieval.backends import get_embedder
from textkit import percentile


class Command(BaseCommand):
    help = "Time the FAQ direct match at growing numbers of entries."

    def add_arguments(self, parser):
        parser.add_argument("--entries", type=int, nargs="+", default=[1000, 10000])
        parser.add_argument("--questions", type=int, default=20)
        parser.add_argument("--embedder", default="", help="default: the first default one")
        parser.add_argument("--json", dest="json_out", default="")

    def handle(self, *args, **opts):
        name = opts["embedder"] or settings.RAG_DEFAULT_EMBEDDERS[0]
        if name not in settings.RAG_EMBEDDERS:
            raise CommandError(f"unknown embedder {name!r}")
        dimension = get_embedder(name).dimension
        user, _ = get_user_model().objects.get_or_create(username="rag-benchmark-faq")
        rng = np.random.default_rng(15)
        questions = [
            f"How do I configure feature {i} of the system?" for i in range(opts["questions"])
        ]
        rows = []
        for size in opts["entries"]:
            kb = KnowledgeBase.objects.create(
                owner=user, name=f"faq scale {size} {time.time()}", embedders=[name]
            )
            try:
                vectors = rng.standard_normal((size, dimension)).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                FaqEntry.objects.bulk_create(
                    [
                        FaqEntry(
                            knowledge_base=kb,
                            question=f"Question {i} about topic {i % 97}?",
                            answer="An answer.",
                            embedder=name,
                            embedding=[round(float(x), 6) for x in vector],
                            language="en",
                        )
                        for i, vector in enumerate(vectors)
                    ],
                    batch_size=1000,
                )
                faq_match(knowledge_bases=[kb], question="a first question loads the model")
                times = []
                for question in questions:
                    t0 = time.perf_counter()
                    faq_match(knowledge_bases=[kb], question=question)
                    times.append((time.perf_counter() - t0) * 1000)
            finally:
                knowledge_base_delete(knowledge_base=kb)
            rows.append(
                {
                    "entries": size,
                    "p50_ms": round(percentile(times, 50), 1),
                    "p95_ms": round(percentile(times, 95), 1),
                }
            )
        self.stdout.write(f"FAQ match, embedder {name}, {len(questions)} questions per size")
        self.stdout.write(f"{'entries':>8} {'p50 ms':>8} {'p95 ms':>8}")
        for row in rows:
            self.stdout.write(f"{row['entries']:>8} {row['p50_ms']:>8} {row['p95_ms']:>8}")
        if opts["json_out"]:
            report = {"embedder": name, "questions": len(questions), "rows": rows}
            Path(opts["json_out"]).write_text(json.dumps(report, indent=2))
