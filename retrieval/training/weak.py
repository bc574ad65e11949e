"""Weak queries from document sections: the reader's question is approximated by the
section's heading, a question template around it, or the section's first sentence.

Used for the shipped default (Debian manuals, bench/reranker/train_default.py) and for a
knowledge base's own documents (retrieval.training.pairs.weak_queries_from_knowledge_base).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from textkit import has_cjk

# Headings that name a part of every page, not a topic: the page title makes them a query.
GENERIC_HEADINGS = frozenset(
    """description descriptions example examples note notes parameters parameter synopsis
    options overview see also compatibility outputs output return value usage introduction
    details syntax settings tips warning caution important arguments notes: related topics
    参数 示例 例子 说明 注意 概述 语法 选项 提示 另请参见 相关主题 返回值 描述 简介""".split()
)
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


@dataclass(frozen=True)
class Section:
    page: str  # page title
    heading: str
    body: str  # the section text, heading not included


@dataclass(frozen=True)
class WeakQuery:
    query: str
    positive: str  # the section text the query should find (first sentence removed if used)
    kind: str  # heading | template | sentence


def _is_generic(heading: str) -> bool:
    h = heading.strip().lower().rstrip(":：")
    return h in GENERIC_HEADINGS or len(h) <= 2


def first_sentence(text: str) -> tuple[str, str]:
    parts = _SENTENCE_END.split(text.strip(), maxsplit=1)
    if len(parts) == 2 and parts[1].strip():
        return parts[0].strip(), parts[1].strip()
    return "", text


def weak_query(section: Section, rng: random.Random) -> WeakQuery | None:
    """One weak query for the section, or None when it has nothing query-like to offer."""
    heading = re.sub(r"\s+", " ", section.heading).strip()
    zh = has_cjk(heading + section.body[:200])
    if heading and _is_generic(heading):
        heading = f"{section.page}: {heading}" if section.page else ""
    roll = rng.random()
    if heading and roll < 0.45:
        return WeakQuery(heading, section.body, "heading")
    if heading and roll < 0.75:
        if zh:
            template = rng.choice(["如何{h}？", "什么是{h}？", "{h}是什么？", "怎样设置{h}？"])
        else:
            template = rng.choice(
                ["How do I use {h}?", "What is {h}?", "How does {h} work?", "What are {h}?"]
            )
        return WeakQuery(template.format(h=heading), section.body, "template")
    sentence, rest = first_sentence(section.body)
    if 12 <= len(sentence) <= 240 and len(rest) >= 80:
        return WeakQuery(sentence, rest, "sentence")
    if heading:
        return WeakQuery(heading, section.body, "heading")
    return None
