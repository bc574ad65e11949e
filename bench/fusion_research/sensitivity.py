"""Sensitivity of the language-branched score fusion + the recommended configuration.

.venv/bin/python bench/fusion_research/sensitivity.py    (from the repository root; after signals.py)

Weights are parametrised as  w_minilm = m,  w_bm25 = (1 - m) * beta,  w_use = (1 - m) * (1 - beta),
with (m, beta) chosen by query language.
"""

from __future__ import annotations

import common as C
import fusion as F
import numpy as np

EN, ZH = C.SETS
REC = {  # recommended: min-max CombSUM, BM25 floor 0 when < 50 matches
    "norm": "minmax0",
    "en": np.array([0.10, 0.80, 0.10]),
    "zh": np.array([0.50, 0.00, 0.50]),
}


def w(m, beta):
    return np.array([(1 - m) * beta, m, (1 - m) * (1 - beta)])


def rec_ranks(qs, norm, w_en, w_zh):
    return F.ranks_for(qs, F.feature_mats(qs, norm), np.atleast_2d(w_en), np.atleast_2d(w_zh))[0]


def bootstrap_delta(r_a, r_b, n=5000, seed=0):
    """Paired bootstrap of nDCG@10(a) - nDCG@10(b); returns mean, 2.5%, 97.5%, wins, losses."""

    def g(r):
        return np.where(r < 10, 1 / np.log2(r + 2.0), 0)

    d = g(r_a) - g(r_b)
    rng = np.random.default_rng(seed)
    bs = d[rng.integers(0, len(d), (n, len(d)))].mean(1)
    return (
        d.mean(),
        np.percentile(bs, 2.5),
        np.percentile(bs, 97.5),
        int((d > 0).sum()),
        int((d < 0).sum()),
    )


def main():
    data = {n: F.prepare(n) for n in C.SETS}
    print(
        "language detection (zh if CJK chars / (CJK chars + Latin words) >= 0.2):",
        {n: f"{sum(q.zh for q in data[n])}/{len(data[n])} zh" for n in C.SETS},
    )

    print("\n== single stages (own top-50 list) ==   nDCG MRR R@10 R@50")
    singles = {}
    for s in F.SIG:
        for n in C.SETS:
            singles[(s, n)] = F.single_metrics(data[n], s)
        print(f"{s:8s} EN {F.fmt(singles[(s, EN)])} | ZH {F.fmt(singles[(s, ZH)])}")
    bar = {
        n: (
            max(singles[(s, n)]["ndcg10"][0] for s in F.SIG),
            max(singles[(s, n)]["r50"][0] for s in F.SIG),
        )
        for n in C.SETS
    }

    # ---- sensitivity grids, per language branch
    ms_en = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    ms_zh = [0.0, 0.05, 0.1, 0.2, 0.3]
    betas = [0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0]
    for norm in ("minmax0", "z0", "rrf"):
        for n, ms in ((EN, ms_en), (ZH, ms_zh)):
            qs = data[n]
            mats = F.feature_mats(qs, norm)
            W = np.array([w(m, b) for m in ms for b in betas])
            res = F.evaluate(qs, mats, W)
            print(
                f"\n[{norm}] {n}: nDCG@10 / R@50 (rows m = w_minilm, cols beta = bm25 share of the rest); "
                f"'*' meets bar nDCG>={bar[n][0]:.3f} & R@50>={bar[n][1]:.3f}"
            )
            print("   m\\beta " + " ".join(f"{b:>12}" for b in betas))
            for i, m in enumerate(ms):
                cells = []
                for j in range(len(betas)):
                    k = i * len(betas) + j
                    ok = res["ndcg10"][k] >= bar[n][0] - 1e-9 and res["r50"][k] >= bar[n][1] - 1e-9
                    cells.append(f"{res['ndcg10'][k]:.3f}/{res['r50'][k]:.3f}{'*' if ok else ' '}")
                print(f"   {m:5.2f}  " + " ".join(cells))

    # ---- recommended configuration and a few alternatives, applied with language branching
    print(
        "\n== branched configurations (EN weights for non-CJK queries, ZH weights for CJK queries) =="
    )
    configs = [
        ("REC minmax0 en(.1,.8,.1) zh(.5,0,.5)", "minmax0", REC["en"], REC["zh"]),
        ("z0 en(.1,.8,.1) zh(.5,0,.5)", "z0", REC["en"], REC["zh"]),
        ("minmax0 en(.1,.8,.1) zh(.45,.1,.45)", "minmax0", REC["en"], w(0.1, 0.5)),
        (
            "rrf k=60 en(.1,.9,0) zh(.8,0,.2)",
            "rrf",
            np.array([0.1, 0.9, 0]),
            np.array([0.8, 0, 0.2]),
        ),
        ("rrf k=60 en(.1,.8,.1) zh(.5,0,.5)", "rrf", REC["en"], REC["zh"]),
        ("minmax0 en(.15,.7,.15) zh(.4,0,.6)", "minmax0", w(0.7, 0.5), w(0.0, 0.4)),
        ("minmax (floor=last score) en(.1,.8,.1) zh(.5,0,.5)", "minmax", REC["en"], REC["zh"]),
    ]
    for lab, norm, we, wz in configs:
        out = {
            n: F.fmt(F.metrics_from_ranks(rec_ranks(data[n], norm, we, wz)[None, :]))
            for n in C.SETS
        }
        print(f"{lab:50s} EN {out[EN]} | ZH {out[ZH]}")
    # unbranched, no language detection
    for lab, norm, conf in (
        ("unbranched equal z, conf=ztop", "z", "ztop"),
        ("unbranched equal minmax, conf=ztop", "minmax", "ztop"),
    ):
        out = {
            n: F.fmt(F.evaluate(data[n], F.feature_mats(data[n], norm, conf), np.ones(3) / 3))
            for n in C.SETS
        }
        print(f"{lab:50s} EN {out[EN]} | ZH {out[ZH]}")

    # ---- D: MiniLM for Chinese queries (BM25:USE kept 1:1)
    print("\n== D: MiniLM weight on Chinese queries (minmax0, bm25:use = 1:1) ==")
    for m in (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4):
        r = rec_ranks(data[ZH], "minmax0", REC["en"], w(m, 0.5))
        print(f"  w_minilm={m:.2f}: ZH {F.fmt(F.metrics_from_ranks(r[None, :]))}")
    r0 = rec_ranks(data[ZH], "minmax0", REC["en"], w(0.0, 0.5))
    r1 = rec_ranks(data[ZH], "minmax0", REC["en"], w(0.1, 0.5))
    print(
        "  paired nDCG delta (w=0.1 - w=0): mean %.4f CI [%.4f, %.4f] wins %d losses %d"
        % bootstrap_delta(r1, r0)
    )

    # ---- rec vs best single stage, paired bootstrap
    print("\n== REC vs best single stage (paired bootstrap on nDCG@10) ==")
    for n, s in ((EN, "minilm"), (ZH, "bm25")):
        r = rec_ranks(data[n], REC["norm"], REC["en"], REC["zh"])
        rs = np.array(
            [
                (q.rank[s][q.rel[0]] - 1 if q.rel and np.isfinite(q.rank[s][q.rel[0]]) else 10**6)
                for q in data[n]
            ]
        )
        print(
            f"  {n} vs {s}: delta %.4f CI [%.4f, %.4f] wins %d losses %d" % bootstrap_delta(r, rs)
        )

    # ---- tuning optimism: 2-fold CV within each set, tuning (m, beta) on one half
    print(
        "\n== tuning optimism: random half-splits, (m, beta) tuned on one half, scored on the other =="
    )
    rng = np.random.default_rng(1)
    for n, ms in ((EN, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]), (ZH, [0.0, 0.1, 0.2, 0.3])):
        qs = data[n]
        mats = F.feature_mats(qs, "minmax0")
        W = np.array([w(m, b) for m in ms for b in betas])
        R = F.ranks_for(qs, mats, W)
        g = np.where(R < 10, 1 / np.log2(R + 2.0), 0)
        recw = REC["en"] if n == EN else REC["zh"]
        rec_row = F.ranks_for(qs, mats, recw[None, :])[0]
        grec = np.where(rec_row < 10, 1 / np.log2(rec_row + 2.0), 0)
        tuned, fixed = [], []
        for _ in range(200):
            perm = rng.permutation(len(qs))
            a, b = perm[: len(qs) // 2], perm[len(qs) // 2 :]
            k = int(np.argmax(g[:, a].mean(1)))
            tuned.append(g[k, b].mean())
            fixed.append(grec[b].mean())
        print(
            f"  {n}: tuned-on-half -> other half nDCG {np.mean(tuned):.3f}; fixed REC on same halves {np.mean(fixed):.3f}; "
            f"in-sample best on full set {g.mean(1).max():.3f}"
        )


if __name__ == "__main__":
    main()
