"""The shared text toolkit: one CJK definition, one language rule, one percentile."""

from __future__ import annotations

import random

import numpy as np

import textkit
from ingestion.parsers.base import detect_language as document_language
from retrieval.fusion import detect_query_language


def test_cjk_covers_every_ideograph_block_and_nothing_else():
    for ch in ("中", "\u3400", "\u9fff", "\uf900", "\U00020001"):
        assert textkit.is_cjk(ch) and textkit.has_cjk(f"a{ch}b")
    for ch in ("a", "。", "，", "ア", "한"):
        assert not textkit.is_cjk(ch)


def test_questions_and_documents_share_one_language_rule():
    assert detect_query_language is textkit.detect_language
    assert document_language is textkit.detect_language
    cases = {
        "How do I create an index?": "en",
        "如何创建索引？": "zh",
        "MiKTeX、fpTeX 和 TeX Live 是什么关系": "zh",
        "Debian 新维护者手册 by Josip Rodin": "zh",
        "The word 中文 appears once in this long English sentence here.": "en",
        "12345 !!! ---": "",
        "": "",
    }
    for text, language in cases.items():
        assert textkit.detect_language(text) == language, text


def test_long_documents_are_sampled_and_keep_their_language():
    assert textkit.detect_language("维护者手册" * 200_000) == "zh"
    assert textkit.detect_language("maintainer guide " * 100_000) == "en"


def test_percentile_interpolates_like_numpy():
    rng = random.Random(3)
    for _ in range(200):
        values = [rng.random() for _ in range(rng.randint(1, 40))]
        q = rng.choice([0, 37, 50, 95, 99, 100])
        assert abs(textkit.percentile(values, q) - float(np.percentile(values, q))) < 1e-12
    assert textkit.percentile([], 95) == 0.0


def test_sentences_split_in_both_languages():
    assert textkit.split_sentences("第一句。第二句！Third one. Fourth?\nFifth") == [
        "第一句。",
        "第二句！",
        "Third one.",
        "Fourth?",
        "Fifth",
    ]
