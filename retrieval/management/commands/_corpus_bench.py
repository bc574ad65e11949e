"""bench_search --corpus: recall at a million chunks over many knowledge bases (#15 part 5).

Builds (once; later runs reuse it) `--total` chunks of real-looking text in `--kbs` knowledge
bases: one of `--largest` chunks and the others log-spaced, a fifth of them Chinese. A chunk
is three sentences re-sampled from bench/search_scale/sentences.{en,zh}.txt (PostgreSQL
manual pages; LibreOffice help and the Debian Edu manual in Chinese) plus two names drawn
from a Zipf vocabulary of synthetic words (product names, identifiers: the long tail real
documents have and a re-sampled corpus would lack). Vectors are synthetic and clustered, as
in the single-knowledge-base mode. A tenth of the documents carry the filter tag.

Then, per scope (a small English, a small Chinese and the large knowledge base, and the
large one with the tag filter), times dense, keyword (common words, and with a rare word)
and hybrid recall, the exhaustive BM25 the keyword search replaced, and the recall@10/@50 of
the keyword search against exhaustive BM25 with the same statistics (and, with the filter,
against the old scoped statistics).
"""

from __future__ import annotations

import functools
import io
import json
import time
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction
from django.test.utils import override_settings

from ingestion.models import Document, KnowledgeBase
from ingestion.scope import document_scope
from retrieval.evaluation import percentile
from retrieval.fusion import fuse
from retrieval.recall import bounded_keyword_search, dense_search, exhaustive_keyword_search
from retrieval.text import TS_CONFIG, query_tokens, segment

DATA = Path(settings.BASE_DIR) / "bench" / "search_scale"
PREFIX = "bench-corpus"
INDEX = "bench_hnsw_corpus"
SENTENCES_PER_CHUNK = 3
NAMES_PER_CHUNK = 2
NAME_VOCABULARY = 200_000
SYLLABLES = (
    "ka lo mar ven tri sol dak pel rin zo bu fen gar hol jix nub quo ras tev wil "
    "yor zan bel cro dum eth fay gil hask ion jut kel lum mox nir orb pax"
).split()


def name_word(i: int) -> str:
    n = len(SYLLABLES)
    return SYLLABLES[i % n] + SYLLABLES[(i // n) % n] + SYLLABLES[(i // n // n) % n] + "x"


def kb_sizes(total: int, kbs: int, largest: int) -> list[int]:
    """One knowledge base of `largest` chunks; the others log-spaced (1 : 8) over the rest."""
    if kbs == 1:
        return [total]
    raw = np.geomspace(1.0, 8.0, kbs - 1)
    rest = np.floor(raw / raw.sum() * (total - largest)).astype(int)
    rest[-1] += total - largest - rest.sum()
    return [largest, *rest.tolist()]


def load_sentences(lang: str) -> tuple[list[str], list[str]]:
    lines = (DATA / f"sentences.{lang}.txt").read_text().splitlines()
    lines = [line for line in lines if line.strip()]
    return lines, [segment(line) for line in lines]


def corpus_kbs() -> list[KnowledgeBase]:
    return list(KnowledgeBase.objects.filter(name__startswith=f"{PREFIX} ").order_by("pk"))


def drop_corpus(stderr) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {INDEX}")
    for kb in corpus_kbs():
        kb.delete()
    stderr.write("corpus dataset dropped")


def build_corpus(
    *, total, kbs, largest, embedder, dim, clustered_vectors, filter_tag, build_memory, stderr
):
    from retrieval.management.commands.bench_search import CHUNKS_PER_DOCUMENT

    existing = corpus_kbs()
    if existing:
        stderr.write(f"reusing {len(existing)} corpus knowledge bases")
        return existing, {}
    owner, _ = get_user_model().objects.get_or_create(
        username="rag-benchmark", defaults={"is_active": False}
    )
    pools = {lang: load_sentences(lang) for lang in ("en", "zh")}
    name_weights = 1.0 / np.arange(1, NAME_VOCABULARY + 1) ** 1.1
    name_weights /= name_weights.sum()
    names = [name_word(i) for i in range(NAME_VOCABULARY)]
    made = []
    t_load = time.perf_counter()
    for i, n in enumerate(kb_sizes(total, kbs, largest)):
        lang = "zh" if i % 5 == 4 else "en"
        rng = np.random.default_rng(1000 + i)
        kb = KnowledgeBase.objects.create(
            owner=owner, name=f"{PREFIX} {i:03d} {lang} {n}", embedders=[embedder]
        )
        raw, seg = pools[lang]
        picks = rng.integers(0, len(raw), size=(n, SENTENCES_PER_CHUNK))
        extra = rng.choice(NAME_VOCABULARY, size=(n, NAMES_PER_CHUNK), p=name_weights)
        vectors = clustered_vectors(n, rng)
        n_docs = -(-n // CHUNKS_PER_DOCUMENT)
        glue = "" if lang == "zh" else " "
        with transaction.atomic():
            docs = Document.objects.bulk_create(
                Document(
                    knowledge_base=kb,
                    original_name=f"corpus-{d}.txt",
                    content_hash=f"corpus{i}-{d:08d}".ljust(64, "x"),
                    language=lang,
                    tags=[filter_tag] if d % 10 == 0 else [],
                )
                for d in range(n_docs)
            )
            buffer = io.StringIO()
            for c in range(n):
                words = [names[w] for w in extra[c]]
                text = glue.join(raw[p] for p in picks[c][:2]) + f" {words[0]} "
                text += raw[picks[c][2]] + f" {words[1]}"
                search = " ".join([seg[p] for p in picks[c]] + words)
                text = text.replace("\t", " ").replace("\\", " ")
                search = search.replace("\t", " ").replace("\\", " ")
                buffer.write(
                    f"{docs[c // CHUNKS_PER_DOCUMENT].pk}\t{kb.pk}\t{c}\t{text}\t"
                    f"{len(search.split())}\t{lang}\t{search}\t{len(search.split())}\n"
                )
            with connection.cursor() as cursor:
                cursor.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS bench_stage (document_id bigint, "
                    "knowledge_base_id bigint, ordinal int, text text, token_count int, "
                    "language text, search_text text, search_length int) ON COMMIT DELETE ROWS"
                )
                with cursor.copy("COPY bench_stage FROM STDIN") as copy:
                    copy.write(buffer.getvalue())
                # One INSERT with the tsvector: no second version of every row to vacuum.
                cursor.execute(
                    "INSERT INTO ingestion_chunk (document_id, knowledge_base_id, ordinal, text, "
                    "token_count, heading_path, sheet, kind, language, is_parent, search_text, "
                    "search_length, search_vector) SELECT document_id, knowledge_base_id, "
                    "ordinal, text, token_count, '', '', 'text', language, false, search_text, "
                    "search_length, to_tsvector(%s::regconfig, search_text) FROM bench_stage",
                    [TS_CONFIG],
                )
                cursor.execute(
                    "SELECT ordinal, id FROM ingestion_chunk WHERE knowledge_base_id = %s",
                    [kb.pk],
                )
                ids = dict(cursor.fetchall())
                row = "\t".join(["%d", str(kb.pk), embedder, "[" + ",".join(["%.5f"] * dim) + "]"])
                with cursor.copy(
                    "COPY ingestion_chunkembedding "
                    "(chunk_id, knowledge_base_id, embedder, embedding) FROM STDIN"
                ) as copy:
                    for start in range(0, n, 5000):
                        block = vectors[start : start + 5000]
                        copy.write(
                            "".join(row % (ids[start + j], *v) + "\n" for j, v in enumerate(block))
                        )
        made.append(kb)
        stderr.write(f"kb {i} ({lang}, {n} chunks) loaded, {time.perf_counter() - t_load:.0f} s")
    load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('maintenance_work_mem', %s, false)", [build_memory])
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON ingestion_chunkembedding USING hnsw "
            f"((embedding::vector({dim})) vector_cosine_ops) WHERE embedder = %s",
            [embedder],
        )
        cursor.execute("ANALYZE ingestion_chunk")
        cursor.execute("ANALYZE ingestion_chunkembedding")
    build_s = time.perf_counter() - t0
    stderr.write(f"HNSW built in {build_s:.0f} s")
    return made, {"load_s": round(load_s, 1), "index_build_s": round(build_s, 1)}


def _queries(kb, lang: str, n: int, rng, rare: bool) -> list[str]:
    """Common: three words of a sentence the knowledge base re-samples (frequent at this
    size). Rare: one synthetic name that occurs in the knowledge base, plus two such words."""
    raw, _ = load_sentences(lang)
    out = []
    rare_words = []
    if rare:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT c.search_text FROM ingestion_chunk c WHERE c.knowledge_base_id = %s "
                "AND c.ordinal = ANY(%s)",
                [kb.pk, rng.integers(0, 10_000_000, size=4 * n).tolist()],
            )
            texts = [r[0] for r in cursor.fetchall()]
        if len(texts) < n:  # small knowledge base: ordinals are smaller
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT search_text FROM ingestion_chunk WHERE knowledge_base_id = %s "
                    "ORDER BY ordinal LIMIT %s",
                    [kb.pk, 4 * n],
                )
                texts = [r[0] for r in cursor.fetchall()]
        rare_words = [t.split()[-1] for t in texts]
    while len(out) < n:
        tokens = [t for t in query_tokens(raw[int(rng.integers(len(raw)))]) if len(t) >= 2]
        if len(tokens) < 3:
            continue
        chosen = [tokens[int(j)] for j in rng.choice(len(tokens), size=2, replace=False)]
        if rare:
            chosen.insert(1, rare_words[len(out) % len(rare_words)])
        else:
            chosen.append(tokens[int(rng.integers(len(tokens)))])
        out.append(" ".join(dict.fromkeys(chosen)))
    return out


def run_corpus(*, made, n_queries, embedder, dim, ef, filter_tag, k=50, stderr) -> list[dict]:
    sized = sorted(
        ((int(kb.name.split()[-1]), kb.name.split()[2], kb) for kb in made), key=lambda x: x[0]
    )
    largest = sized[-1][2]

    def near(lang: str, size: int):
        same = [x for x in sized if x[1] == lang]
        return min(same, key=lambda x: abs(x[0] - size))[2] if same else None

    # Every fifth knowledge base is Chinese: with fewer than five there is no Chinese scope.
    scopes = [
        (f"small {lang}", kb, lang, None)
        for lang in ("en", "zh")
        if (kb := near(lang, 10_000)) is not None
    ]
    scopes += [
        ("large", largest, "en", None),
        ("large + tag", largest, "en", {"tags": [filter_tag]}),
    ]
    prewarm(stderr)
    rng = np.random.default_rng(7)
    rows = []
    for label, kb, lang, filters in scopes:
        scope = document_scope(filters=filters)
        query_vectors = near_data_queries(kb, embedder, dim, n_queries, rng)
        chunks = int(kb.name.split()[-1])
        dense = functools.partial(
            dense_search, knowledge_bases=[kb], embedder=embedder, k=k, ef_search=ef, scope=scope
        )
        dense_ms, dense_hits = [], []
        for i, vector in enumerate([*query_vectors[:3], *query_vectors]):
            t0 = time.perf_counter()
            hits = dense(vector=vector)
            if i >= 3:
                dense_ms.append((time.perf_counter() - t0) * 1000)
                dense_hits.append([h.chunk_id for h in hits])
        # The graph search against every distance computed (the exact path of dense_search).
        with override_settings(RAG_DENSE_EXACT_MAX_CHUNKS=10**12):
            dense_r10 = float(
                np.mean(
                    [
                        _overlap(got, [h.chunk_id for h in dense(vector=v)], 10)
                        for got, v in zip(dense_hits, query_vectors, strict=True)
                    ]
                )
            )
        for kind in ("common", "rare"):
            texts = _queries(kb, lang, n_queries, rng, rare=kind == "rare")
            new_ms, old_ms, hybrid_ms, exact, scored = [], [], [], [], []
            r10, r50, r10_old, mass = [], [], [], []
            for i, text in enumerate([*texts[:3], *texts]):
                timed = i >= 3
                t0 = time.perf_counter()
                result = bounded_keyword_search(knowledge_bases=[kb], query=text, k=k, scope=scope)
                t_new = (time.perf_counter() - t0) * 1000
                # "Before": the keyword search as it was (statistics counted over the scope).
                t0 = time.perf_counter()
                old = exhaustive_keyword_search(knowledge_bases=[kb], query=text, k=k, scope=scope)
                t_old = (time.perf_counter() - t0) * 1000
                # The reference: exhaustive BM25 with the statistics the new search uses (the
                # knowledge base's). Without a filter they are the same set (every bench
                # document is approved), so the "before" result is the reference.
                reference = old
                if filters:
                    reference = exhaustive_keyword_search(
                        knowledge_bases=[kb], query=text, k=k, scope=scope, scoped_statistics=False
                    )
                vector = query_vectors[(i - 3) % n_queries]
                t0 = time.perf_counter()
                lists = {
                    "dense": dense(vector=vector),
                    "keyword": bounded_keyword_search(
                        knowledge_bases=[kb], query=text, k=k, scope=scope
                    ).hits,
                }
                fuse(lists, query=text, k=k)
                t_hybrid = (time.perf_counter() - t0) * 1000
                if not timed:
                    continue
                new_ms.append(t_new)
                old_ms.append(t_old)
                hybrid_ms.append(t_hybrid)
                got = [h.chunk_id for h in result.hits]
                ref = [h.chunk_id for h in reference]
                r10.append(_overlap(got, ref, 10))
                r50.append(_overlap(got, ref, k))
                r10_old.append(_overlap(got, [h.chunk_id for h in old], 10))
                mass.append(_mass(result.hits, reference, k))
                exact.append(result.exact)
                scored.append(result.scored)
            rows.append(
                {
                    "scope": label,
                    "chunks": chunks,
                    "queries": kind,
                    "example": texts[0],
                    "dense_p50_ms": round(percentile(dense_ms, 50), 1),
                    "dense_p95_ms": round(percentile(dense_ms, 95), 1),
                    "dense_recall@10": round(dense_r10, 4),
                    "keyword_p50_ms": round(percentile(new_ms, 50), 1),
                    "keyword_p95_ms": round(percentile(new_ms, 95), 1),
                    "exhaustive_p50_ms": round(percentile(old_ms, 50), 1),
                    "exhaustive_p95_ms": round(percentile(old_ms, 95), 1),
                    "hybrid_p50_ms": round(percentile(hybrid_ms, 50), 1),
                    "hybrid_p95_ms": round(percentile(hybrid_ms, 95), 1),
                    "recall@10": round(float(np.mean(r10)), 4),
                    f"recall@{k}": round(float(np.mean(r50)), 4),
                    "recall@10_vs_scoped_stats": round(float(np.mean(r10_old)), 4),
                    "score_mass": round(float(np.mean(mass)), 4),
                    "exact_share": round(float(np.mean(exact)), 3),
                    "scored_mean": round(float(np.mean(scored)), 0),
                }
            )
            stderr.write(f"{label} {kind}: {rows[-1]}")
    return rows


RECALL_TABLES = ("ingestion_chunk", "ingestion_chunkembedding", "ingestion_document")


def prewarm(stderr) -> None:
    """Load the tables recall touches, their TOAST and every index on them into shared
    buffers (pg_prewarm, contrib; what does not fit stays in the OS cache), so that the
    figures are those of a server that has been answering for a while. Right after starting
    the database, a 500k-chunk scope's first queries read the HNSW graph from disk: dense
    p95 went to 1.3 s in the first 25 queries."""
    t0 = time.perf_counter()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            cursor.execute(
                "SELECT sum(pg_prewarm(r.oid, 'buffer')) FROM pg_class r WHERE r.oid IN ("
                "SELECT t.oid FROM pg_class t WHERE t.relname = ANY(%s) "
                "UNION SELECT t.reltoastrelid FROM pg_class t "
                "WHERE t.relname = ANY(%s) AND t.reltoastrelid <> 0 "
                "UNION SELECT i.indexrelid FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
                "WHERE t.relname = ANY(%s))",
                [list(RECALL_TABLES)] * 3,
            )
            blocks = cursor.fetchone()[0] or 0
            cursor.execute("SHOW shared_buffers")
            buffers = cursor.fetchone()[0]
    except DatabaseError as exc:
        stderr.write(f"no pg_prewarm ({exc}); the first queries may read from disk")
        return
    stderr.write(
        f"prewarmed {blocks * 8 // 1024} MB in {time.perf_counter() - t0:.0f} s "
        f"(shared_buffers {buffers})"
    )


# Each query vector is a stored chunk vector of the scope plus this much noise per dimension
# (cosine ~0.7 to its source): a question lies near the passages that answer it.
QUERY_NOISE = 0.05


def near_data_queries(kb, embedder: str, dim: int, n: int, rng) -> np.ndarray:
    """Query vectors near the knowledge base's own vectors. Every knowledge base's synthetic
    vectors span their own random subspace, so vectors drawn afresh (as this benchmark did
    before) lay off every knowledge base's data: all neighbours nearly equidistant, which
    makes a graph search wander as no real question does."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [float(rng.uniform(-1, 1))])
        cursor.execute(
            f"SELECT embedding::vector({dim})::text FROM ingestion_chunkembedding WHERE id IN ("
            "SELECT id FROM ingestion_chunkembedding WHERE knowledge_base_id = %s "
            "AND embedder = %s ORDER BY random() LIMIT %s) ORDER BY id",
            [kb.pk, embedder, n],
        )
        vectors = np.array([json.loads(row[0]) for row in cursor.fetchall()], np.float32)
    vectors += QUERY_NOISE * rng.normal(size=vectors.shape).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _mass(got, ref, k: int) -> float:
    """Sum of the BM25 scores of the returned top k over the exact top k's: how close to
    optimal an approximate list is when near-ties make set overlap harsh."""
    total = sum(h.score for h in ref[:k])
    return sum(h.score for h in got[:k]) / total if total else 1.0


def sweep_budgets(*, made, budgets, n_queries, k=50, stderr) -> list[dict]:
    """Latency and recall of the keyword search on the largest knowledge base for several
    candidate budgets (RAG_KEYWORD_CANDIDATES), against one exhaustive reference per query."""
    largest = max(made, key=lambda kb: int(kb.name.split()[-1]))
    scope = document_scope(filters=None)
    rng = np.random.default_rng(11)
    out = []
    for kind in ("common", "rare"):
        texts = _queries(largest, "en", n_queries, rng, rare=kind == "rare")
        refs = [
            exhaustive_keyword_search(knowledge_bases=[largest], query=t, k=k, scope=scope)
            for t in texts
        ]
        for budget in budgets:
            ms, r10, rk, mass, exact = [], [], [], [], []
            pairs = list(zip(texts, refs, strict=True))
            for i, (text, ref) in enumerate([*pairs[:3], *pairs]):
                t0 = time.perf_counter()
                result = bounded_keyword_search(
                    knowledge_bases=[largest], query=text, k=k, scope=scope, budget=budget
                )
                if i < 3:
                    continue
                ms.append((time.perf_counter() - t0) * 1000)
                got, ids = [h.chunk_id for h in result.hits], [h.chunk_id for h in ref]
                r10.append(_overlap(got, ids, 10))
                rk.append(_overlap(got, ids, k))
                mass.append(_mass(result.hits, ref, k))
                exact.append(result.exact)
            out.append(
                {
                    "queries": kind,
                    "budget": budget,
                    "p50_ms": round(percentile(ms, 50), 1),
                    "p95_ms": round(percentile(ms, 95), 1),
                    "recall@10": round(float(np.mean(r10)), 4),
                    f"recall@{k}": round(float(np.mean(rk)), 4),
                    "score_mass": round(float(np.mean(mass)), 4),
                    "exact_share": round(float(np.mean(exact)), 3),
                }
            )
            stderr.write(f"budget sweep: {out[-1]}")
    return out


def print_sweep(write, rows: list[dict], k: int = 50) -> None:
    write(
        f"\n{'queries':>8} {'budget':>7} {'p50 ms':>7} {'p95 ms':>7} {'R@10':>6} "
        f"{'R@' + str(k):>6} {'mass':>6} {'exact':>6}"
    )
    for r in rows:
        write(
            f"{r['queries']:>8} {r['budget']:>7} {r['p50_ms']:>7} {r['p95_ms']:>7} "
            f"{r['recall@10']:>6} {r[f'recall@{k}']:>6} {r['score_mass']:>6} {r['exact_share']:>6}"
        )


def _overlap(got: list[int], ref: list[int], k: int) -> float:
    ref_k = ref[:k]
    if not ref_k:
        return 1.0
    return len(set(got[:k]) & set(ref_k)) / len(ref_k)


def print_corpus(write, rows: list[dict], k: int = 50) -> None:
    write(
        f"\n{'scope':>12} {'chunks':>7} {'queries':>7} {'dense p50/p95':>14} {'R@10':>6} "
        f"{'keyword p50/p95':>16} {'exhaustive p50/p95':>19} {'hybrid p50/p95':>15} "
        f"{'R@10':>6} {'R@' + str(k):>6} {'R@10 old':>8} {'mass':>6} {'exact':>6} {'scored':>7}"
    )
    for r in rows:
        write(
            f"{r['scope']:>12} {r['chunks']:>7} {r['queries']:>7} "
            f"{r['dense_p50_ms']:>6}/{r['dense_p95_ms']:<7} {r.get('dense_recall@10', ''):>6} "
            f"{r['keyword_p50_ms']:>7}/{r['keyword_p95_ms']:<8} "
            f"{r['exhaustive_p50_ms']:>8}/{r['exhaustive_p95_ms']:<10} "
            f"{r['hybrid_p50_ms']:>7}/{r['hybrid_p95_ms']:<7} "
            f"{r['recall@10']:>6} {r[f'recall@{k}']:>6} {r['recall@10_vs_scoped_stats']:>8} "
            f"{r['score_mass']:>6} {r['exact_share']:>6} {int(r['scored_mean']):>7}"
        )
