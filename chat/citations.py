"""Citation markers: parse them, map them to sources, drop the ones that point nowhere,
and check each sentence of an answer against the passages it cites."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from textkit import split_sentences

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


# Markdown, line by line: what is not prose is never checked as a claim.
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^\s{0,3}#{1,6}(\s|$)")
_RULE = re.compile(r"^\s{0,3}([-*_=])(\s*\1){2,}\s*$")  # ---, ***, ===: rules, setext lines
_TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)+\|?\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,9}[.)])(?:\s+|$)")
_QUOTE = re.compile(r"^\s{0,3}>\s?")
_INDENTED_CODE = re.compile(r"^(?: {4}|\t)")
# Inline markup, undone in this order (images before links, strong before emphasis).
_INLINE = [
    (re.compile(r"`+([^`]*)`+"), r"\1"),
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),
    # Links the browser refuses to render (markdown-it's validateLink) stay as written.
    (re.compile(r"\[([^\]]+)\]\((?!\s*(?:javascript|vbscript|file|data):)[^)]*\)", re.I), r"\1"),
    (re.compile(r"<(https?://[^>\s]+)>"), r"\1"),
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (re.compile(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])"), r"\2"),
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"), r"\1"),
]
_BOLD_LINE = re.compile(r"^(\*\*|__)(.+)\1[:：]?$")
_WORD = re.compile(r"\w", re.UNICODE)


def strip_inline_markdown(text: str) -> str:
    """The text a reader sees: `**x**`, `*x*`, `` `x` ``, `[x](url)` become x; [n] stay."""
    for pattern, replacement in _INLINE:
        text = pattern.sub(replacement, text)
    return text


def prose_blocks(text: str) -> list[str]:
    """The prose of a Markdown answer: paragraphs and list items with their markers and
    inline markup removed. Headings, rules, tables and code blocks are left out, and so is
    a line that is only a bold label ("**Steps:**")."""
    blocks: list[str] = []
    paragraph: list[str] = []
    fence: str | None = None
    after_blank = True
    in_list = False
    in_table = False
    lines = text.replace("\r\n", "\n").split("\n")

    def flush() -> None:
        if paragraph:
            blocks.append(" ".join(paragraph))
            paragraph.clear()

    for i, line in enumerate(lines):
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        opened = _FENCE.match(line)
        if opened:
            flush()
            fence = opened.group(1)[0] * 3
            continue
        if not line.strip():
            flush()
            after_blank = True
            in_table = False
            continue
        if _INDENTED_CODE.match(line) and after_blank and not in_list and not paragraph:
            continue  # an indented code block (a paragraph's continuation lines are not)
        after_blank = False
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if "|" in line and (_TABLE_DELIMITER.match(line) or _TABLE_DELIMITER.match(nxt)):
            flush()
            in_table = True
            continue
        if "|" in line and (in_table or line.strip().startswith("|")):
            flush()  # a table row, with or without its outer pipes
            continue
        in_table = False
        if _RULE.match(line):
            if paragraph and line.strip()[0] in "=-":
                paragraph.pop()  # setext underline: the line above was a heading
            flush()
            continue
        if _HEADING.match(line):
            flush()
            continue
        line = _QUOTE.sub("", line)
        item = _LIST_ITEM.match(line)
        if item:
            flush()
            in_list = True
            line = line[item.end() :]
        elif not paragraph:
            in_list = in_list and line[:1].isspace()
        line = line.strip()
        if not line:
            continue
        if _BOLD_LINE.match(line) and not MARKER.search(line):
            flush()  # a label such as "**Steps:**" on its own line
            continue
        paragraph.append(strip_inline_markdown(line))
    flush()
    return blocks


def _is_fragment(sentence: str) -> bool:
    """Too little to be a claim: no words, or a lead-in label ("Steps:", "To do it:")."""
    words = MARKER.sub("", sentence).strip(" -*•\t")
    if len(_WORD.findall(words)) < 2:
        return True
    return words.endswith((":", "：")) and not MARKER.search(sentence)


def answer_sentences(text: str) -> list[str]:
    """Sentences of an answer's prose, each keeping the markers that follow it."""
    out: list[str] = []
    for block in prose_blocks(text):
        start = len(out)
        for sentence in split_sentences(block):
            stripped = MARKER.sub("", sentence).strip(" -*•\t")
            if len(stripped) < 2:
                if len(out) > start:  # a lone marker belongs to the sentence before it
                    out[-1] = f"{out[-1]} {sentence}"
                continue
            out.append(sentence)
    return [s for s in out if not _is_fragment(s)]


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
