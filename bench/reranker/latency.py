"""Second-stage latency for 30 candidates (p50/p95 ms) on collected candidate pickles.

.venv/bin/python bench/reranker/latency.py /tmp/rerank_data/cands-dev-*.pkl
"""

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
from retrieval.rerank.learned import LearnedReranker  # noqa: E402

reranker = LearnedReranker(name="default")
reranker.rerank("warm up", [])
for path in sys.argv[1:]:
    rows = pickle.load(open(path, "rb"))
    times = []
    for row in rows:
        t0 = time.perf_counter()
        reranker.rerank(row["query"], row["candidates"][:30])
        times.append((time.perf_counter() - t0) * 1000)
    p50, p95 = np.percentile(times, [50, 95])
    print(f"{Path(path).name}: 30 candidates, p50 {p50:.1f} ms, p95 {p95:.1f} ms ({len(rows)} q)")
