"""Tokenisation for keyword search, shared by ingestion (index side) and recall (query side).

PostgreSQL's parser does not segment Chinese, so both sides segment with jieba first and
hand PostgreSQL whitespace-separated tokens; the `english` configuration then stems the
English words and leaves the Chinese tokens as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from textkit import CJK_IDEOGRAPHS, has_cjk
from textkit import jieba as _get_jieba

TS_CONFIG = "english"

_TOKEN = re.compile(f"[\\w{CJK_IDEOGRAPHS}]+", re.UNICODE)
_CJK_RUN = re.compile(f"[{CJK_IDEOGRAPHS}]+")

# Very frequent Chinese function words: they match everything and carry no signal.
ZH_STOPWORDS = frozenset(
    "的 了 是 在 和 与 或 及 也 就 都 而 把 被 让 给 对 从 到 为 以 之 其 这 那 这个 那个 "
    "一个 什么 怎么 怎样 如何 为什么 哪些 哪个 吗 呢 吧 啊 我 你 他 她 它 我们 你们 他们 "
    "可以 能 会 要 有 没有 中 上 下 个 等 如果 时 使用 进行".split()
)


def segment(text: str) -> str:
    """Whitespace-separated tokens for to_tsvector: jieba for Chinese, words otherwise."""
    if not has_cjk(text):
        return " ".join(_TOKEN.findall(text.lower()))
    jieba = _get_jieba()
    tokens = []
    for token in jieba.cut_for_search(text.lower()):
        token = token.strip()
        if token and _TOKEN.fullmatch(token):
            tokens.append(token)
    return " ".join(tokens)


def tokens_in(text: str, tokens: Iterable[str]) -> set[str]:
    """Which of these (segmented) tokens the text contains, without segmenting the text.

    Ranking asks this of every candidate passage, and jieba costs about 2.6 µs per character:
    50 Chinese passages took ~100 ms, the whole of the Chinese rerank step. A Chinese token
    is looked up as a substring instead (a dictionary word of the query inside the passage;
    cut_for_search emits the sub-words of longer words too, so the answers agree almost
    always), a Latin one among the text's words."""
    lower = text.lower()
    words: set[str] | None = None
    found = set()
    for token in tokens:
        if has_cjk(token):
            if token in lower:
                found.add(token)
            continue
        if words is None:
            words = set(_TOKEN.findall(lower)) if not has_cjk(lower) else _latin_words(lower)
        if token in words:
            found.add(token)
    return found


def _latin_words(lower: str) -> set[str]:
    # In Chinese text \w runs swallow neighbouring ideographs ("使用debian"): split them off;
    # jieba also splits "dh_make" into dh, make (kept whole too).
    words = {w for run in _TOKEN.findall(lower) for w in _CJK_RUN.split(run) if w}
    return words | {p for w in words if "_" in w for p in w.split("_") if p}


def query_tokens(text: str) -> list[str]:
    """Distinct query tokens, stopwords and one-character Chinese particles removed."""
    seen: dict[str, None] = {}
    for token in segment(text).split():
        if token in ZH_STOPWORDS:
            continue
        seen.setdefault(token, None)
    return list(seen)
