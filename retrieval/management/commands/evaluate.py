"""manage.py evaluate DATASET_DIR [--embedder NAME ...] [--json OUT] [--keep]

Ingests a BEIR-layout dataset into a fresh knowledge base through the real pipeline (each
corpus entry one document), runs every query through the real retrieval service, and prints
nDCG@10, MRR@10, Recall@10, Recall@k and stage latencies for each configuration.
"""

from __future__ import annotations

import io
import json
import re
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from tqdm import tqdm

from ingestion.models import DocumentStatus, KnowledgeBase
from ingestion.services import (
    document_create,
    documents_embed_for_rerank,
    documents_ingest_batch,
    knowledge_base_delete,
    rerank_embedders_for,
)
from retrieval.backends import get_reranker
from retrieval.evaluation import ConfigResult, dedupe_documents, format_table, load_beir
from retrieval.services import recall

EVAL_USER = "rag-evaluation"


class Command(BaseCommand):
    help = "Evaluate retrieval on a BEIR-layout dataset (corpus.jsonl, queries.jsonl, qrels/)."

    def add_arguments(self, parser):
        parser.add_argument(
            "dataset", nargs="?", help="folder with corpus.jsonl, queries.jsonl, qrels/test.tsv"
        )
        parser.add_argument(
            "--kb", help="instead of a dataset: evaluate this knowledge base on its QA pairs"
        )
        parser.add_argument("--qa", help="with --kb: first import QA pairs from this CSV")
        parser.add_argument(
            "--embedder",
            action="append",
            dest="embedders",
            help="embedder from RAG_EMBEDDERS (repeatable; default: what new knowledge bases get)",
        )
        parser.add_argument(
            "--reranker",
            action="append",
            dest="rerankers",
            help="reranker name from RAG_RERANKERS (repeatable; default: all configured)",
        )
        parser.add_argument("--recall-k", type=int, default=None, help="candidates (RAG_RECALL_K)")
        parser.add_argument("--limit", type=int, default=None, help="only the first N queries")
        parser.add_argument("--json", dest="json_out", help="write the results as JSON here")
        parser.add_argument("--keep", action="store_true", help="keep the knowledge base")
        parser.add_argument(
            "--reuse-kb",
            type=int,
            default=None,
            help="id of a knowledge base kept by an earlier --keep run on the same dataset",
        )

    def handle(self, *args, **options):
        if options["kb"]:
            return self._evaluate_kb(options)
        if not options["dataset"]:
            raise CommandError("give a DATASET_DIR, or --kb NAME for a knowledge base's QA pairs")
        dataset = load_beir(options["dataset"])
        if not dataset.queries:
            raise CommandError("the dataset has no queries with relevance judgements")
        embedders = options["embedders"] or list(settings.RAG_DEFAULT_EMBEDDERS)
        unknown = [e for e in embedders if e not in settings.RAG_EMBEDDERS]
        if unknown:
            raise CommandError(f"unknown embedder(s): {', '.join(unknown)}")
        rerankers = options["rerankers"] or [
            name
            for name, config in settings.RAG_RERANKERS.items()
            if name != "none" and config.get("EVALUATE", True)
        ]
        recall_k = options["recall_k"] or settings.RAG_RECALL_K

        if options["reuse_kb"]:
            kb = KnowledgeBase.objects.get(pk=options["reuse_kb"])
            self.corpus_ids_of = self._corpus_ids_from_names(kb, dataset)
            options["keep"] = True
        else:
            kb = self._ingest(dataset, embedders)
        try:
            results = self._run(dataset, kb, embedders, rerankers, recall_k, options["limit"])
        finally:
            if options["keep"]:
                self.stdout.write(f"Kept knowledge base {kb.name!r} (id {kb.pk}).")
            else:
                knowledge_base_delete(knowledge_base=kb)

        n_queries = len(results[0].ndcg) if results else 0
        summary = {
            "dataset": dataset.name,
            "queries": n_queries,
            "documents": len(dataset.corpus),
            "recall_k": recall_k,
            "embedders": embedders,
            "results": [r.summary() for r in results],
        }
        title = (
            f"{dataset.name}: {n_queries} queries, {len(dataset.corpus)} documents, "
            f"recall k={recall_k}, embedders {', '.join(embedders)}"
        )
        self.stdout.write(format_table(summary["results"], title=title))
        if options["json_out"]:
            with open(options["json_out"], "w", encoding="utf-8") as handle:
                json.dump(summary, handle, indent=2, ensure_ascii=False)
            self.stdout.write(f"Wrote {options['json_out']}")

    def _evaluate_kb(self, options) -> None:
        from retrieval.qa_eval import knowledge_base_evaluate, qa_pairs_import

        kb = KnowledgeBase.objects.filter(name=options["kb"]).first()
        if kb is None:
            raise CommandError(f"no knowledge base named {options['kb']!r}")
        if options["qa"]:
            with open(options["qa"], encoding="utf-8") as handle:
                created, problems = qa_pairs_import(knowledge_base=kb, text=handle.read())
            self.stdout.write(f"Imported {created} QA pairs.")
            for problem in problems:
                self.stdout.write(f"  {problem}")
        report = knowledge_base_evaluate(knowledge_base=kb)
        if not report["pairs"]:
            raise CommandError("this knowledge base has no QA pairs that match a document")
        title = f"{kb.name}: {report['pairs']} QA pairs"
        self.stdout.write(format_table(report["results"], title=title))
        if options["json_out"]:
            with open(options["json_out"], "w", encoding="utf-8") as handle:
                json.dump(report, handle, indent=2, ensure_ascii=False)

    def _ingest(self, dataset, embedders) -> KnowledgeBase:
        User = get_user_model()
        owner, _ = User.objects.get_or_create(username=EVAL_USER, defaults={"is_active": False})
        if owner.has_usable_password():
            owner.set_unusable_password()
            owner.save()
        kb = KnowledgeBase.objects.create(
            owner=owner,
            name=f"eval {dataset.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            embedders=embedders,
        )
        self.corpus_ids_of: dict[int, list[str]] = {}
        ids = []
        for corpus_id, (title, text) in tqdm(
            dataset.corpus.items(), desc="storing", file=self.stderr, unit="doc"
        ):
            body = f"{title}\n\n{text}" if title else text
            name = self._document_name(corpus_id)
            with transaction.atomic():
                result = document_create(
                    knowledge_base=kb,
                    fileobj=io.BytesIO(body.encode("utf-8")),
                    name=name,
                    enqueue=False,
                )
            self.corpus_ids_of.setdefault(result.document.pk, []).append(corpus_id)
            if result.created:
                ids.append(result.document.pk)
        t0 = time.perf_counter()
        with tqdm(total=2 * len(ids), desc="ingesting", file=self.stderr, unit="step") as bar:
            documents_ingest_batch(document_ids=ids, progress=lambda *_: bar.update(1))
        failed = kb.documents.filter(status=DocumentStatus.FAILED).count()
        chunks = kb.chunks.filter(is_parent=False).count()
        self.stdout.write(
            f"Ingested {len(ids)} documents into {chunks} chunks in "
            f"{time.perf_counter() - t0:.1f}s ({failed} failed)."
        )
        # What a worker does in the background once documents are ready: the second-stage
        # embedders' vectors (settings.RAG_RERANK_EMBEDDERS). Timed apart: no document
        # waits for it to be searchable.
        names = rerank_embedders_for(kb)
        if names:
            t0 = time.perf_counter()
            desc = f"second stage ({', '.join(names)})"
            with tqdm(total=len(ids), desc=desc, file=self.stderr, unit="doc") as bar:
                added = documents_embed_for_rerank(
                    document_ids=ids, progress=lambda _: bar.update(1)
                )
            seconds = time.perf_counter() - t0
            self.stdout.write(
                f"Second-stage vectors ({', '.join(names)}): {added} in {seconds:.1f}s "
                f"({added / max(seconds, 1e-9):.1f}/s)."
            )
        return kb

    @staticmethod
    def _document_name(corpus_id: str) -> str:
        return re.sub(r"[^\w.-]+", "_", corpus_id)[:150] + ".txt"

    def _corpus_ids_from_names(self, kb, dataset) -> dict[int, list[str]]:
        by_name = dict(kb.documents.values_list("original_name", "pk"))
        out: dict[int, list[str]] = {}
        for corpus_id in dataset.corpus:
            pk = by_name.get(self._document_name(corpus_id))
            if pk is not None:
                out.setdefault(pk, []).append(corpus_id)
        return out

    def _ranked(self, candidates) -> list[str]:
        docs = dedupe_documents(c.document_id for c in candidates)
        return [cid for d in docs for cid in self.corpus_ids_of.get(d, [])]

    def _run(self, dataset, kb, embedders, rerankers, recall_k, limit):
        kbs = [kb]
        configs = [ConfigResult(f"dense:{name}") for name in embedders]
        keyword = ConfigResult("keyword")
        hybrid = ConfigResult("hybrid")
        reranked = {name: ConfigResult(f"hybrid+rerank:{name}") for name in rerankers}
        backends = {name: get_reranker(name) for name in rerankers}
        queries = list(dataset.queries.items())[:limit]
        for query_id, text in tqdm(queries, desc="querying", file=self.stderr, unit="q"):
            relevant = dataset.qrels[query_id]
            for config, name in zip(configs, embedders, strict=True):
                timings: dict = {}
                found = recall(
                    knowledge_bases=kbs,
                    query=text,
                    k=recall_k,
                    keyword=False,
                    embedders=[name],
                    timings=timings,
                )
                ranked = self._ranked(found)
                config.add(ranked, ranked, relevant, timings["recall"], 0.0)
            timings = {}
            found = recall(
                knowledge_bases=kbs, query=text, k=recall_k, dense=False, timings=timings
            )
            ranked = self._ranked(found)
            keyword.add(ranked, ranked, relevant, timings["recall"], 0.0)

            timings = {}
            found = recall(knowledge_bases=kbs, query=text, k=recall_k, timings=timings)
            ranked = self._ranked(found)
            hybrid.add(ranked, ranked, relevant, timings["recall"], 0.0)
            for name, backend in backends.items():
                t0 = time.perf_counter()
                order = backend.rerank(text, found)
                rerank_ms = (time.perf_counter() - t0) * 1000
                result = reranked[name]
                result.add(self._ranked(order), ranked, relevant, timings["recall"], rerank_ms)
                rel = [c.score for c in order if set(self._ranked([c])) & set(relevant)]
                irr = [c.score for c in order if not set(self._ranked([c])) & set(relevant)]
                if rel:
                    result.relevant_scores.append(max(rel))
                if irr:
                    result.irrelevant_top_scores.append(max(irr))
        return [*configs, keyword, hybrid, *reranked.values()]
