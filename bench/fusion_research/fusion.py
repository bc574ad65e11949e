"""Fusion experiments over cached first-stage scores (run signals.py first).

.venv/bin/python bench/fusion_research/fusion.py     (from the repository root)

Each stage contributes only its top-50 list (BM25: only documents matching a query token).
Fusion is over the union of the lists; a candidate missing from a stage's list gets that
stage's floor (0 after normalisation; no RRF term).
"""

from __future__ import annotations

import common as C
import numpy as np

SIG = C.SIGNALS  # bm25, minilm, use
EPS = 1e-9


# ------------------------------------------------------------------ per-query candidate data
class Q:
    """One query's candidate union with per-stage raw scores / ranks (NaN / inf if missing)."""

    def __init__(self, lists, rel, zh):
        ids = sorted(set(int(i) for idx, _ in lists.values() for i in idx))
        self.ids = np.array(ids, dtype=int)
        pos = {d: j for j, d in enumerate(ids)}
        self.zh = zh
        self.rel = [pos[r] for r in rel if r in pos]  # positions of relevant docs in union
        self.n_rel = len(rel)
        self.raw = {}
        self.rank = {}
        self.lists = lists
        for s, (idx, sc) in lists.items():
            raw = np.full(len(ids), np.nan)
            rk = np.full(len(ids), np.inf)
            for r, (d, v) in enumerate(zip(idx, sc, strict=False)):
                raw[pos[int(d)]] = v
                rk[pos[int(d)]] = r + 1
            self.raw[s] = raw
            self.rank[s] = rk


def prepare(name):
    corpus, queries, rel = C.load_set(name)
    sc = C.load_scores(name)
    lists = {s: C.topk_lists(sc[s], positive_only=(s == "bm25")) for s in SIG}
    out = []
    for qi, q in enumerate(queries):
        out.append(Q({s: lists[s][qi] for s in SIG}, rel[qi], C.is_zh(q["text"])))
    return out


# ------------------------------------------------------------------ normalisations -> (S x U)
def norm_rrf(q, s, k=60):
    return np.where(np.isinf(q.rank[s]), 0.0, 1.0 / (k + q.rank[s]))


def _floor(sc, s, bm25_zero_floor):
    """The stage's floor: its 50th score; for BM25 with fewer than 50 matches, 0 (the score
    every non-matching document has) when bm25_zero_floor."""
    if s == "bm25" and bm25_zero_floor and len(sc) < C.TOPK:
        return 0.0
    return sc[-1]


def norm_minmax(q, s, bm25_zero_floor=False):
    """(s - floor) / (s_1 - floor) over the stage's own top-50 list; missing -> 0."""
    sc = q.lists[s][1]
    if len(sc) == 0:
        return np.zeros(len(q.ids))
    hi, lo = sc[0], _floor(sc, s, bm25_zero_floor)
    v = (q.raw[s] - lo) / (hi - lo) if hi - lo > EPS else np.ones(len(q.ids))
    return np.where(np.isnan(q.raw[s]), 0.0, v)


def norm_max(q, s):
    """s / s_1 (BM25-style, natural floor 0); cosine: (1+s)/(1+s_1)... only used for bm25."""
    sc = q.lists[s][1]
    if len(sc) == 0 or sc[0] <= 0:
        return np.zeros(len(q.ids))
    return np.where(np.isnan(q.raw[s]), 0.0, q.raw[s] / sc[0])


def norm_z(q, s, bm25_zero_floor=False):
    """z-score over the stage's top-50 list, shifted so the floor (50th) is 0; missing -> 0."""
    sc = q.lists[s][1]
    if len(sc) == 0:
        return np.zeros(len(q.ids))
    sd = sc.std()
    v = (q.raw[s] - _floor(sc, s, bm25_zero_floor)) / sd if sd > EPS else np.ones(len(q.ids))
    return np.where(np.isnan(q.raw[s]), 0.0, v)


NORMS = {
    "rrf": norm_rrf,
    "minmax": norm_minmax,
    "z": norm_z,
    "minmax0": lambda q, s: norm_minmax(q, s, True),
    "z0": lambda q, s: norm_z(q, s, True),
    "rrf20": lambda q, s: norm_rrf(q, s, 20),
    "rrf10": lambda q, s: norm_rrf(q, s, 10),
}


# ------------------------------------------------------------------ per-stage confidences
def conf_ztop(q, s):
    """z-score of the stage's best hit within its own top-50 list."""
    sc = q.lists[s][1]
    if len(sc) < 2 or sc.std() < EPS:
        return 0.0 if len(sc) == 0 else 1.0
    return float((sc[0] - sc.mean()) / sc.std())


def conf_margin(q, s):
    """(s_1 - s_2) / (s_1 - s_last)."""
    sc = q.lists[s][1]
    if len(sc) < 2 or sc[0] - sc[-1] < EPS:
        return 0.0 if len(sc) == 0 else 1.0
    return float((sc[0] - sc[1]) / (sc[0] - sc[-1]))


CONFS = {"ztop": conf_ztop, "margin": conf_margin}


# ------------------------------------------------------------------ evaluation
def feature_mats(qs, norm, conf=None, mnz=False, densemax=False):
    """Per query an (S x U) matrix; weights are applied later (vectorised over many W)."""
    mats = []
    for q in qs:
        M = np.stack([NORMS[norm](q, s) for s in SIG])
        if conf is not None:
            M = M * np.array([CONFS[conf](q, s) for s in SIG])[:, None]
        if densemax:
            M = np.stack([M[0], np.zeros_like(M[0]), np.maximum(M[1], M[2])])
        if mnz:
            present = np.stack([~np.isnan(q.raw[s]) for s in SIG]).sum(0)
            M = M * present[None, :]
        mats.append(M)
    return mats


def ranks_for(qs, mats, W_en, W_zh=None):
    """W_* : (K x S) weight grids. Returns (K x nQ) 0-based rank of the (first) relevant doc
    in the fused list, or a big number if it is not in the union. Ties: lower doc index first."""
    W_zh = W_en if W_zh is None else W_zh
    K = W_en.shape[0]
    R = np.full((K, len(qs)), 10**6)
    for j, (q, M) in enumerate(zip(qs, mats, strict=False)):
        if not q.rel:
            continue
        W = W_zh if q.zh else W_en
        F = W @ M  # K x U
        p = q.rel[0]
        f = F[:, [p]]
        better = (F > f + 1e-12).sum(1) + (
            (np.abs(F - f) <= 1e-12) & (np.arange(F.shape[1]) < p)[None, :]
        ).sum(1)
        R[:, j] = better
    return R


def metrics_from_ranks(R):
    """R: (K x nQ) ranks (one relevant doc per query in these sets)."""
    hit10 = R < 10
    ndcg = np.where(hit10, 1.0 / np.log2(R + 2.0), 0).mean(1)
    mrr = np.where(hit10, 1.0 / (R + 1.0), 0).mean(1)
    return {"ndcg10": ndcg, "mrr10": mrr, "r10": hit10.mean(1), "r50": (R < 50).mean(1)}


def single_metrics(qs, s):
    """A stage on its own: its top-50 list and nothing else."""
    R = [
        q.rank[s][q.rel[0]] - 1 if q.rel and np.isfinite(q.rank[s][q.rel[0]]) else 10**6 for q in qs
    ]
    return metrics_from_ranks(np.array([R]))


def evaluate(qs, mats, W_en, W_zh=None):
    return metrics_from_ranks(
        ranks_for(qs, mats, np.atleast_2d(W_en), None if W_zh is None else np.atleast_2d(W_zh))
    )


def simplex(step=0.1, dims=3):
    n = round(1 / step)
    return np.array(
        [[a / n, b / n, (n - a - b) / n] for a in range(n + 1) for b in range(n + 1 - a)]
    )


# ------------------------------------------------------------------ reporting
def fmt(m, i=0):
    return " ".join(f"{m[k][i]:.3f}" for k in ("ndcg10", "mrr10", "r10", "r50"))


def main():
    data = {n: prepare(n) for n in C.SETS}
    EN, ZH = C.SETS
    header = f"{'method':58s} | {EN}: nDCG MRR R@10 R@50 | {ZH}: nDCG MRR R@10 R@50"
    rows = []

    def row(label, per_set):
        line = f"{label:58s} | " + " | ".join(per_set[n] for n in C.SETS)
        rows.append(line)
        print(line, flush=True)

    print(header)
    # -- single stages (through the same machinery)
    single = {}
    for s in SIG:
        single[s] = {n: single_metrics(data[n], s) for n in C.SETS}
        row(f"single {s} (own top-50 list)", {n: fmt(single[s][n]) for n in C.SETS})
    best = {
        n: (max(single[s][n]["ndcg10"][0] for s in SIG), max(single[s][n]["r50"][0] for s in SIG))
        for n in C.SETS
    }
    print(
        "bar (best single nDCG, best single R@50):",
        {n: tuple(round(x, 3) for x in v) for n, v in best.items()},
    )

    # -- fixed, unbranched candidates
    eq = np.ones(3) / 3
    for norm in ("rrf", "minmax", "z"):
        for conf in (None, "ztop", "margin"):
            for mnz in (False, True):
                if norm == "rrf" and mnz:
                    continue
                lab = f"equal {norm}" + (f" conf={conf}" if conf else "") + (" MNZ" if mnz else "")
                row(
                    lab,
                    {
                        n: fmt(evaluate(data[n], feature_mats(data[n], norm, conf, mnz), eq))
                        for n in C.SETS
                    },
                )
    for norm in ("rrf", "minmax", "z"):
        w = np.array([0.5, 0, 0.5])
        row(
            f"bm25 + max(dense) {norm} 1:1",
            {
                n: fmt(evaluate(data[n], feature_mats(data[n], norm, densemax=True), w))
                for n in C.SETS
            },
        )

    # -- weight grids per set (the language branch each set exercises), per method
    grid = simplex(0.1)
    print("\n== weight grids (simplex step 0.1, weights bm25/minilm/use) ==")
    grids = {}
    for norm in ("rrf", "minmax", "z"):
        for conf in (None, "ztop"):
            key = (norm, conf)
            grids[key] = {}
            for n in C.SETS:
                mats = feature_mats(data[n], norm, conf)
                m = evaluate(data[n], mats, grid)
                grids[key][n] = m
                ok = (m["ndcg10"] >= best[n][0] - 1e-9) & (m["r50"] >= best[n][1] - 1e-9)
                i = int(np.argmax(m["ndcg10"]))
                top5 = np.argsort(-m["ndcg10"])[:5]
                print(
                    f"{norm:6s} conf={str(conf):5s} {n:14s} best w={grid[i]} nDCG={m['ndcg10'][i]:.3f} "
                    f"R50={m['r50'][i]:.3f}; #weights meeting bar={ok.sum()}/{len(grid)}; "
                    f"top5 w={[tuple(grid[t]) for t in top5]}"
                )
            # unbranched: the same weights for both sets; leave-one-set-out
            a, b = grids[key][EN], grids[key][ZH]
            ia, ib = int(np.argmax(a["ndcg10"])), int(np.argmax(b["ndcg10"]))
            both = np.minimum(a["ndcg10"] - best[EN][0], b["ndcg10"] - best[ZH][0])
            ic = int(np.argmax(both))
            print(
                f"   LOSO: tune EN w={grid[ia]} -> ZH nDCG {b['ndcg10'][ia]:.3f}; tune ZH w={grid[ib]} -> EN nDCG {a['ndcg10'][ib]:.3f}; "
                f"maximin shared w={grid[ic]} EN {a['ndcg10'][ic]:.3f}/{a['r50'][ic]:.3f} ZH {b['ndcg10'][ic]:.3f}/{b['r50'][ic]:.3f}"
            )
    return data, grids, best


if __name__ == "__main__":
    main()
