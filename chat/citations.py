"""Citation markers: parse them, map them to sources, drop the ones that point nowhere,
and check each sentence of an answer against the passages it cites."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ingestion.chunking import split_sentences

MARKER = re.compile(r"\[(\d{1,3}(?:\s*[,，]\s*\d{1,3})*)\]")


def cited_numbers(text: str) -> list[int]:
    out: list[int] = []
    for match in MARKER.finditer(text):
        for part in re.split(r"[,，]", match.group(1)):
            n = int(part.strip())
            if n not in out:
                out.append(n)
    return out


def clean_markers(text: str, valid: set[int]) -> str:
    """Drop markers (or the numbers inside them) that point to no passage."""

    def repl(match: re.Match) -> str:
        numbers = [int(p.strip()) for p in re.split(r"[,，]", match.group(1))]
        kept = [n for n in numbers if n in valid]
        return "".join(f"[{n}]" for n in kept)

    return MARKER.sub(repl, text)


@dataclass(frozen=True)
class ClaimCheck:
    sentence: str
    cites: tuple[int, ...]
    support: float | None  # best score against the cited passages; None when none cited
    verified: bool


def answer_sentences(text: str) -> list[str]:
    """Sentences of an answer, each keeping the markers that follow it."""
    out = []
    for sentence in split_sentences(text):
        stripped = MARKER.sub("", sentence).strip(" -*•\t")
        if len(stripped) < 2:
            if out:  # a lone marker belongs to the sentence before it
                out[-1] = f"{out[-1]} {sentence}"
            continue
        out.append(sentence)
    return out


def check_claims(
    answer: str, passages: Sequence[str], *, scorer, threshold: float
) -> list[ClaimCheck]:
    """Score each sentence against the passages it cites; below threshold or uncited is
    unverified. `passages[n-1]` is passage [n]; `scorer.score(query, passages)`."""
    checks = []
    for sentence in answer_sentences(answer):
        cites = tuple(n for n in cited_numbers(sentence) if 1 <= n <= len(passages))
        claim = MARKER.sub("", sentence).strip()
        if not cites:
            checks.append(ClaimCheck(claim, (), None, False))
            continue
        scores = scorer.score(claim, [passages[n - 1] for n in cites])
        support = max(scores) if scores else 0.0
        checks.append(ClaimCheck(claim, cites, round(support, 4), support >= threshold))
    return checks
