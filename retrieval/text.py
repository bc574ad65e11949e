"""Tokenisation for keyword search, shared by ingestion (index side) and recall (query side).

PostgreSQL's parser does not segment Chinese, so both sides segment with jieba first and
hand PostgreSQL whitespace-separated tokens; the `english` configuration then stems the
English words and leaves the Chinese tokens as they are.
"""

from __future__ import annotations

import re

from textkit import CJK_IDEOGRAPHS, has_cjk
from textkit import jieba as _get_jieba

TS_CONFIG = "english"

_TOKEN = re.compile(f"[\\w{CJK_IDEOGRAPHS}]+", re.UNICODE)

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


def query_tokens(text: str) -> list[str]:
    """Distinct query tokens, stopwords and one-character Chinese particles removed."""
    seen: dict[str, None] = {}
    for token in segment(text).split():
        if token in ZH_STOPWORDS:
            continue
        seen.setdefault(token, None)
    return list(seen)
