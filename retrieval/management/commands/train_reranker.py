"""manage.py train_reranker --kb NAME [--max-pairs N] [--epochs N] [--output DIR] [--no-activate]

Adapts the second stage to one knowledge base: weak queries from its own sections, its QA
pairs (and chat feedback once it exists), hard negatives from our own recall; compares the
new model with the one in use on held-out queries and switches the knowledge base to it
only if it wins. `--deactivate` switches back. The shipped default itself is reproduced by
bench/reranker/train_default.py.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ingestion.models import KnowledgeBase
from retrieval.training.service import reranker_deactivate, reranker_train

STEPS_PER_EPOCH = 100  # full-batch optimiser steps: the data of one KB fits in memory


class Command(BaseCommand):
    help = "Train a knowledge base's reranker on its own documents and QA pairs."

    def add_arguments(self, parser):
        parser.add_argument("--kb", required=True, help="knowledge base name or id")
        parser.add_argument("--max-pairs", type=int, default=400, help="training queries")
        parser.add_argument("--epochs", type=int, default=3, help=f"x{STEPS_PER_EPOCH} steps")
        parser.add_argument("--output", help="model folder (default: MEDIA_ROOT/rerankers/...)")
        parser.add_argument(
            "--base",
            default="current",
            help="start from: 'current' (the KB's active model, else the shipped default)",
        )
        parser.add_argument("--activate", action="store_true", default=True)
        parser.add_argument("--no-activate", dest="activate", action="store_false")
        parser.add_argument("--deactivate", action="store_true", help="switch back and exit")

    def handle(self, *args, **options):
        kb = self._kb(options["kb"])
        if options["deactivate"]:
            reranker_deactivate(knowledge_base=kb)
            kb.refresh_from_db()
            self.stdout.write(f"{kb.name}: reranker is now {kb.reranker or '(site default)'}")
            return
        if options["base"] != "current":
            raise CommandError(
                "only --base current is implemented (cross-encoder fine-tuning is not done)"
            )
        with tqdm(total=100, desc="training", file=self.stderr, unit="%") as bar:

            def progress(percent, message):
                bar.set_postfix_str(message)
                bar.update(percent - bar.n)

            run = reranker_train(
                knowledge_base=kb,
                max_queries=options["max_pairs"],
                steps=options["epochs"] * STEPS_PER_EPOCH,
                activate=options["activate"],
                output=options["output"],
                progress=progress,
            )
        self.stdout.write(self._table(run.metrics))
        self.stdout.write(run.message)
        active = "active" if run.is_active else "not activated"
        self.stdout.write(f"Model #{run.pk} ({active}) in {run.path}")
        self.stdout.write(json.dumps(run.card["data"], ensure_ascii=False))

    def _kb(self, ref: str) -> KnowledgeBase:
        qs = KnowledgeBase.objects.filter(name=ref)
        if ref.isdigit():
            qs = qs | KnowledgeBase.objects.filter(pk=int(ref))
        kbs = list(qs)
        if len(kbs) != 1:
            raise CommandError(f"{len(kbs)} knowledge bases match {ref!r}")
        return kbs[0]

    def _table(self, metrics: dict) -> str:
        lines = [f"{'lang':<5} {'held-out q':>10} {'recall order':>13} {'current':>8} {'new':>8}"]
        for lang, m in metrics.items():
            lines.append(
                f"{lang:<5} {m['queries']['held_out']:>10} {m['recall_order']['ndcg@10']:>13.3f} "
                f"{m['base']['ndcg@10']:>8.3f} {m['trained']['ndcg@10']:>8.3f}"
            )
        return "held-out nDCG@10\n" + "\n".join(lines)
