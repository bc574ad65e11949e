"""Answers without a language model: the sentences of the top passages that best match the
question, each with its [n].

An extract must read as an answer: never the question again, never a heading (a Chinese
FAQ's passages start with the question as their heading, and the extract used to repeat it
three times), never the same sentence twice, and a lead-in ending in ":" keeps the list
item, command or code line it introduces ("Install it with:" alone answers nothing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ingestion.chunking import HEADING_SEPARATOR, split_sentences
from retrieval.support import scorer
from retrieval.types import Candidate

MIN_CHARS = 8
_LEAD_IN = re.compile(r"[:：]\s*$")
_MARKER = re.compile(r"^\s*(?:[-*•·]|\d{1,3}[.)、]|[（(]?\d{1,3}[)）])\s*")


def _norm(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _units(text: str) -> list[str]:
    """Sentences, with a lead-in joined to what it introduces."""
    out: list[str] = []
    pending = ""
    for sentence in split_sentences(text):
        if pending:
            sentence = f"{pending} {sentence}"
            pending = ""
        if _LEAD_IN.search(sentence):
            pending = sentence
            continue
        out.append(sentence)
    if pending:
        out.append(pending)
    return out


def _is_echo(unit: str, question: str, headings: set[str]) -> bool:
    """The question itself, or a heading, said again."""
    n = _norm(_MARKER.sub("", unit))
    if not n:
        return True
    if n in headings:
        return True
    q = _norm(question)
    if q and (n == q or (len(n) >= 6 and (n in q or q in n) and len(n) <= 1.3 * len(q))):
        return True
    return False


def extract_answer(question: str, passages: Sequence[Candidate], *, max_sentences: int = 3) -> str:
    units, numbers = [], []
    seen: set[str] = set()
    for n, candidate in enumerate(passages[:3], start=1):
        headings = {_norm(h) for h in candidate.heading_path.split(HEADING_SEPARATOR) if h}
        for unit in _units(candidate.text):
            key = _norm(unit)
            if len(unit) < MIN_CHARS or key in seen or _is_echo(unit, question, headings):
                continue
            seen.add(key)
            units.append(unit)
            numbers.append(n)
    if not units:
        return ""
    scores = scorer().score(question, units)
    ranked = sorted(range(len(units)), key=lambda i: (-scores[i], numbers[i], i))
    chosen = sorted(ranked[:max_sentences], key=lambda i: (numbers[i], i))
    return "\n".join(f"- {units[i]} [{numbers[i]}]" for i in chosen)
