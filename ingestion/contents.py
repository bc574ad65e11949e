"""Table-of-contents and index pages, recognised at ingestion.

A contents page lists every heading of a manual with its page number, so keyword search and
the embedders both find it for almost any question about the manual, and it used to be
cited as [1] (in a Chinese FAQ manual whose questions are also its headings, 43 of 44 wrong
first sources were contents pages). Their sections become kind "toc"; retrieval's support
stage keeps such passages out of the first places (retrieval.support).

Plain Python: works on parsed sections, page by page (only paged formats have such pages).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from ingestion.parsers.base import Section
from textkit import CJK_IDEOGRAPHS

TOC_KIND = "toc"
# "1.2 Installing … 4", "Introduction . . . . 7", "Setup ........ 12"
_LEADER_ENTRY = re.compile(r"(?:…+|(?:\.\s?){3,}|·{3,})\s*\d{1,4}\b")
# "asn1_read_value, 15" or "quilt, 13, 42": an index entry
_INDEX_ENTRY = re.compile(r"[^\W\d][^,，\n]{0,60}[,，]\s*\d{1,4}\b")
_HEADING = re.compile(
    r"^\s*(table of contents|contents|index|list of (figures|tables)|目\s*录|索\s*引|"
    r"函数索引|图目录|表目录)\b",
    re.I,
)
_NUMBER = re.compile(r"(?<![\w.])\d{1,4}(?![\w])")
_TOKEN = re.compile(f"[^\\W\\d_]+|\\d+|[{CJK_IDEOGRAPHS}]")


def is_contents_page(text: str, *, follows_contents: bool = False) -> bool:
    """Contents or index page, from its text: entries with leaders and page numbers; or a
    contents/index heading (or the page after such a page) over text that is mostly short
    entries and numbers. Code ("(0,0) rectangle (1,1)") is dense in numbers too, which is
    why number density alone never decides."""
    if not text.strip():
        return False
    leaders = len(_LEADER_ENTRY.findall(text))
    if leaders >= 5:
        return True
    tokens = _TOKEN.findall(text)
    density = len(_NUMBER.findall(text)) / max(len(tokens), 1)
    index_entries = len(_INDEX_ENTRY.findall(text))
    if _HEADING.search(text[:200]):
        return density >= 0.12 or index_entries >= 5 or leaders >= 2
    return follows_contents and index_entries >= 8 and density >= 0.15


def mark_contents_pages(sections: Sequence[Section]) -> list[Section]:
    """The sections, with those on contents and index pages turned into kind "toc"."""
    pages: dict[int, list[str]] = {}
    for section in sections:
        if section.page is not None:
            pages.setdefault(section.page, []).append(section.text or "")
    contents: set[int] = set()
    for page in sorted(pages):
        text = "\n".join(pages[page])
        if is_contents_page(text, follows_contents=page - 1 in contents):
            contents.add(page)
    if not contents:
        return list(sections)
    return [
        dataclasses.replace(s, kind=TOC_KIND)
        if s.page in contents and s.kind not in ("title",)
        else s
        for s in sections
    ]
