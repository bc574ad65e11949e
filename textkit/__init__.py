"""Text basics that every app shares: which characters are CJK, which language a text is in,
sentence splitting, the jieba segmenter, percentiles. It sits at the bottom of the dependency
graph (it imports no app and no Django), so ingestion, retrieval, chat and curation all read
one definition of each.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Sequence

# CJK ideographs: the unified block, extension A, compatibility ideographs, and the
# supplementary-plane extensions B and later.
CJK_IDEOGRAPHS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
# CJK punctuation and full-width forms: part of Chinese text, but not ideographs.
CJK_PUNCTUATION = "\u3000-\u303f\uff00-\uffef"
CJK = re.compile(f"[{CJK_IDEOGRAPHS}]")
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_'\-]*")
# Sentence ends: Chinese 。！？；… and English .!?; followed by space, plus line breaks.
SENTENCE_END = re.compile(r"(?<=[。！？；…])|(?<=[.!?;])\s+|\n+")
# Past this many characters, language detection reads four spread-out samples.
_SAMPLE = 100_000


def is_cjk(ch: str) -> bool:
    """Whether the character is a CJK ideograph."""
    return bool(CJK.fullmatch(ch))


def has_cjk(text: str) -> bool:
    return CJK.search(text) is not None


def detect_language(text: str) -> str:
    """'zh' when CJK ideographs are at least a fifth of ideographs + Latin words, 'en' when
    Latin words dominate, '' when there are neither. One ideograph weighs like one word, so
    a Chinese question naming a few English products is Chinese, and an English page quoting
    a Chinese term is English; the same rule for questions and documents."""
    if len(text) > 4 * _SAMPLE:
        step = len(text) // 4
        text = " ".join(text[i * step : i * step + _SAMPLE] for i in range(4))
    cjk = len(CJK.findall(text))
    latin = len(LATIN_WORD.findall(text))
    if cjk + latin == 0:
        return ""
    return "zh" if cjk / (cjk + latin) >= 0.2 else "en"


def split_sentences(text: str) -> list[str]:
    parts = [p.strip() for p in SENTENCE_END.split(text) if p and p.strip()]
    return parts or ([text.strip()] if text.strip() else [])


_jieba_lock = threading.Lock()
_jieba = None


def jieba():
    """The jieba module, initialised once per process (its dictionary takes about a second)."""
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                import jieba as module

                module.setLogLevel(logging.WARNING)
                module.initialize()
                _jieba = module
    return _jieba


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between the closest ranks (numpy's
    default), 0 for no values: one definition for benchmarks and dashboards."""
    if not len(values):
        return 0.0
    ordered = sorted(float(v) for v in values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
