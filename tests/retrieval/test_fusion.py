import pytest

from retrieval.fusion import detect_query_language, fuse, stage_weights
from retrieval.recall import Hit


def test_query_language():
    assert detect_query_language("How do I create an index?") == "en"
    assert detect_query_language("如何创建索引？") == "zh"
    # Latin words count once each, so a Chinese question about MiKTeX is still Chinese.
    assert detect_query_language("MiKTeX、fpTeX 和 TeX Live 是什么关系") == "zh"
    assert detect_query_language("???") == ""


def test_weights_follow_the_language(settings):
    en = stage_weights("what is vacuum", ["keyword", "dense:minilm", "dense:use", "dense:bge"])
    zh = stage_weights("什么是清理", ["keyword", "dense:minilm", "dense:use"])
    assert en["dense:minilm"] > en["keyword"] and en["dense:bge"] > 0
    assert zh["dense:minilm"] == 0 and zh["keyword"] == zh["dense:use"] > 0


def test_min_max_fusion_is_scale_free_and_missing_scores_zero():
    keyword = [Hit(1, 12.0), Hit(2, 6.0), Hit(3, 3.0)]
    dense = [Hit(2, 0.91), Hit(4, 0.90), Hit(1, 0.20)]
    weights = {"keyword": 0.5, "dense:use": 0.5}
    fused = dict(fuse({"keyword": keyword, "dense:use": dense}, query="q", k=10, weights=weights))
    # Chunk 2 is strong in both lists and wins; chunk 3 exists only in keyword.
    assert max(fused, key=fused.get) == 2
    assert fused[1] == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)
    # Multiplying a stage's scores by any factor changes nothing.
    scaled = [Hit(h.chunk_id, h.score * 100) for h in keyword]
    assert fuse({"keyword": scaled, "dense:use": dense}, query="q", k=10, weights=weights) == fuse(
        {"keyword": keyword, "dense:use": dense}, query="q", k=10, weights=weights
    )


def test_short_keyword_list_uses_zero_floor():
    fused = fuse({"keyword": [Hit(7, 2.0)]}, query="q", k=50, weights={"keyword": 1.0})
    assert fused == [(7, 1.0)]
