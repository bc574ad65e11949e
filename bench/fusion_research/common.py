"""Shared helpers for the fusion research scripts: data loading, BM25, signals cache, metrics.

Run scripts from the repository root:  .venv/bin/python bench/fusion_research/signals.py
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]  # the repository root
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
BENCH = Path(os.environ.get("BENCH_DIR", ROOT.parent / "shared" / "bench"))
CACHE = Path(__file__).resolve().parent / "cache"
SETS = ["python-faq-en", "tex-faq-zh"]
TOPK = 50  # each stage returns its top 50 (as the product's SQL does)

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_'\-]*")


def cjk_share(text: str) -> float:
    """CJK chars / (CJK chars + Latin words).  A Latin word counts once, like one CJK char,
    so a Chinese question quoting English commands still reads as Chinese."""
    n_cjk = len(_CJK.findall(text))
    n_lat = len(_LATIN_WORD.findall(text))
    return n_cjk / (n_cjk + n_lat) if n_cjk + n_lat else 0.0


def is_zh(text: str, threshold: float = 0.2) -> bool:
    return cjk_share(text) >= threshold


def load_set(name: str):
    d = BENCH / name
    corpus = [json.loads(l) for l in open(d / "corpus.jsonl", encoding="utf-8")]
    queries = [json.loads(l) for l in open(d / "queries.jsonl", encoding="utf-8")]
    qrels = {}
    with open(d / "qrels" / "test.tsv", encoding="utf-8") as f:
        next(f)
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                qrels.setdefault(qid, set()).add(did)
    queries = [q for q in queries if q["_id"] in qrels]
    doc_ids = [d["_id"] for d in corpus]
    idx = {d: i for i, d in enumerate(doc_ids)}
    rel = [sorted(idx[d] for d in qrels[q["_id"]]) for q in queries]
    return corpus, queries, rel


def doc_text(d: dict) -> str:
    return f"{d['title']}\n{d['text']}" if d.get("title") else d["text"]


# ---------------------------------------------------------------- stemming (PG 'english')
_stem_word = None
STEMMER_NAME = None
# PostgreSQL's english.stop (Snowball list, 127 words)
EN_STOP = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his
himself she her hers herself it its itself they them their theirs themselves what which who whom this
that these those am is are was were be been being have has had having do does did doing a an the and
but if or because as until while of at by for with about against between into through during before
after above below to from up down in out on off over under again further then once here there when
where why how all any both each few more most other some such no nor not only own same so than too
very s t can will just don should now""".split()
)


def _init_stemmer():
    global _stem_word, STEMMER_NAME
    if _stem_word is not None:
        return
    extra = os.environ.get("FUSION_STEMMER_PATH", "/tmp/stemlib")
    try:
        import snowballstemmer  # noqa: F401
    except ImportError:
        if extra and os.path.isdir(extra):
            sys.path.append(extra)
    try:
        import snowballstemmer

        st = snowballstemmer.stemmer("english")
        _stem_word = st.stemWord
        STEMMER_NAME = "snowballstemmer(english)"
        return
    except ImportError:
        pass
    try:
        from nltk.stem import PorterStemmer

        ps = PorterStemmer()
        _stem_word = ps.stem
        STEMMER_NAME = "nltk Porter"
        return
    except ImportError:
        pass

    def crude(w):
        for suf in ("ational", "ations", "ation", "ing", "edly", "ed", "ies", "es", "s", "ly"):
            if w.endswith(suf) and len(w) - len(suf) >= 3:
                return w[: -len(suf)]
        return w

    _stem_word = crude
    STEMMER_NAME = "crude suffix stripper"


def normalize_tokens(tokens):
    _init_stemmer()
    out = []
    for t in tokens:
        if t.isascii():
            if t in EN_STOP:
                continue
            t = _stem_word(t)
        out.append(t)
    return out


def doc_tokens(text: str):
    from retrieval.text import segment

    return normalize_tokens(segment(text).split())


def q_tokens(text: str):
    from retrieval.text import query_tokens

    return list(dict.fromkeys(normalize_tokens(query_tokens(text))))


def bm25_matrix(queries, corpus, k1=1.2, b=0.75):
    """Okapi BM25, idf = ln(1 + (N - df + 0.5) / (df + 0.5)) (Lucene form, never negative)."""
    docs = [Counter(doc_tokens(doc_text(d))) for d in corpus]
    N = len(docs)
    lens = np.array([sum(c.values()) for c in docs], dtype=float)
    avgdl = lens.mean()
    df = Counter()
    for c in docs:
        df.update(c.keys())
    S = np.zeros((len(queries), N), dtype=np.float32)
    for qi, q in enumerate(queries):
        for t in q_tokens(q["text"]):
            if t not in df:
                continue
            idf = math.log(1 + (N - df[t] + 0.5) / (df[t] + 0.5))
            for di, c in enumerate(docs):
                f = c.get(t)
                if f:
                    S[qi, di] += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * lens[di] / avgdl))
    return S


# ---------------------------------------------------------------- signals
SIGNALS = ["bm25", "minilm", "use"]


def load_scores(name: str) -> dict[str, np.ndarray]:
    return {s: np.load(CACHE / f"{name}.{s}.npy") for s in SIGNALS}


def topk_lists(S: np.ndarray, k: int = TOPK, positive_only: bool = False):
    """Per query: (doc indices, scores) of the top k, descending. BM25 returns only matches."""
    out = []
    for row in S:
        order = np.argsort(-row, kind="stable")[:k]
        if positive_only:
            order = order[row[order] > 0]
        out.append((order, row[order].astype(float)))
    return out


# ---------------------------------------------------------------- metrics
def metrics(rankings, rel):
    """rankings: per query a ranked list of doc indices (top 50 used)."""
    nd = mrr = r10 = r50 = 0.0
    for ranked, rs in zip(rankings, rel, strict=False):
        ranked = list(ranked)[:50]
        pos = [ranked.index(r) for r in rs if r in ranked]
        best = min(pos) if pos else None
        if best is not None and best < 10:
            # one relevant doc per query -> ideal DCG = 1
            nd += sum(1 / math.log2(p + 2) for p in pos if p < 10) / sum(
                1 / math.log2(i + 2) for i in range(min(len(rs), 10))
            )
            mrr += 1 / (best + 1)
        r10 += sum(1 for p in pos if p < 10) / len(rs)
        r50 += len(pos) / len(rs)
    n = len(rankings)
    return {"ndcg10": nd / n, "mrr10": mrr / n, "r10": r10 / n, "r50": r50 / n}
