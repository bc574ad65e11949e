"""Latency and quality of a fine-tuned cross-encoder on top of the linear ranker, for 30
candidates, by how many of them it re-reads (top) and its window (max_length).

.venv/bin/python bench/reranker/cross_encoder_latency.py MODEL_DIR CANDIDATES.pkl \
    [--queries 60] [--json OUT]

MODEL_DIR is a folder written by `manage.py train_reranker --base ...` (card.json,
ranker.json, cross_encoder/). CANDIDATES.pkl holds labelled first-stage rows as written by
bench/reranker/train_default.py collect. Prints, per setting: nDCG@10, the second stage's
p50/p95 ms, and the raw forward pass of the cross-encoder alone (p50 ms) beside it.
"""

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragapp.settings")
import django  # noqa: E402

django.setup()
from retrieval.rerank.linear import LinearRanker  # noqa: E402
from retrieval.training import cross_encoder as ce  # noqa: E402
from retrieval.training.ranker import query_metrics  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("model_dir", type=Path)
parser.add_argument("candidates")
parser.add_argument("--queries", type=int, default=60)
parser.add_argument("--json", dest="json_out")
args = parser.parse_args()

rows = pickle.load(open(args.candidates, "rb"))[: args.queries]
linear = LinearRanker.load(args.model_dir / "ranker.json")
card = json.loads((args.model_dir / "card.json").read_text())
alpha = card["cross_encoder"]["alpha"]
results = []


def measure(name, ranker, forward=None):
    times, forwards, ndcg = [], [], []
    for row in rows:
        cands = row["candidates"][:30]
        t0 = time.perf_counter()
        scores = ranker.scores(row["query"], cands)
        times.append((time.perf_counter() - t0) * 1000)
        if forward is not None:
            texts = [ce.passage(c) for c in cands[: forward.top]]
            t0 = time.perf_counter()
            ce.logits(forward.model, row["query"], texts)
            forwards.append((time.perf_counter() - t0) * 1000)
        ndcg.append(query_metrics(cands, row["labels"][:30], list(scores))["ndcg@10"])
    out = {
        "setting": name,
        "ndcg@10": round(float(np.mean(ndcg)), 4),
        "p50_ms": round(float(np.percentile(times, 50)), 1),
        "p95_ms": round(float(np.percentile(times, 95)), 1),
        "forward_p50_ms": round(float(np.percentile(forwards, 50)), 1) if forwards else None,
    }
    results.append(out)
    print(
        f"{name:<28} {out['ndcg@10']:>8.3f} {out['p50_ms']:>8} {out['p95_ms']:>8} "
        f"{out['forward_p50_ms'] if out['forward_p50_ms'] is not None else '-':>10}",
        flush=True,
    )


print(f"{len(rows)} queries, 30 candidates each, alpha {alpha}")
print(f"{'setting':<28} {'nDCG@10':>8} {'p50 ms':>8} {'p95 ms':>8} {'fwd p50':>10}")
measure("linear only", linear)
for max_length in (128, 192, 256):
    model = ce.load_cross_encoder(str(args.model_dir / ce.CROSS_ENCODER_DIR), max_length=max_length)
    for top in (5, 10, 20):
        mixed = ce.MixedRanker(linear, model, alpha=alpha, top=top)
        mixed.scores("warm up", rows[0]["candidates"][:30])
        measure(f"+CE top {top}, {max_length} tokens", mixed, forward=mixed)
if args.json_out:
    Path(args.json_out).write_text(json.dumps(results, indent=1))
