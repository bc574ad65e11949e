"""Structure-aware chunking: headings, then paragraphs, then sentences, then words.

Parsed sections become *units* (a paragraph, a list item, a table row). Units under the same
heading path are packed into parent chunks (context for reranking and for the LLM), and each
parent is cut into small child chunks (what recall searches), never across a page, sheet or
slide, so that a child cites one place. A parent with a single child is dropped: the child's
own text is then its context. Sizes are counted with the embedding model's tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from textkit import has_cjk, jieba, split_sentences

if TYPE_CHECKING:  # pragma: no cover
    from ingestion.parsing import Section

HEADING_SEPARATOR = " > "
TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class ChunkDraft:
    text: str
    token_count: int
    heading_path: str = ""
    page: int | None = None
    page_end: int | None = None
    sheet: str = ""
    slide: int | None = None
    kind: str = "text"
    is_parent: bool = False
    parent_index: int | None = None  # index of the parent draft in the same list

    @property
    def embed_text(self) -> str:
        return f"{self.heading_path}\n{self.text}" if self.heading_path else self.text


@dataclass(frozen=True)
class ChunkSizes:
    chunk_tokens: int = 200
    overlap_tokens: int = 30
    parent_tokens: int = 600


@dataclass
class _Unit:
    text: str
    tokens: int
    kind: str
    heading_path: tuple[str, ...]
    page: int | None
    sheet: str
    slide: int | None
    table_header: str = ""
    paragraph: int = 0  # units cut from one paragraph are re-joined with a space

    def place(self) -> tuple:
        return (self.page, self.sheet, self.slide)

    def group(self) -> tuple:
        return (
            self.heading_path,
            self.sheet,
            self.slide,
            self.kind == "table",
            self.kind == "toc",  # a contents page never shares a chunk with real text
            self.table_header,
        )


@dataclass
class _Chunk:
    units: list[_Unit] = field(default_factory=list)
    tokens: int = 0


def split_words(text: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """Cut a sentence that alone exceeds max_tokens at word boundaries (jieba for Chinese)."""
    if has_cjk(text):
        words = list(jieba().cut(text))
        joiner = ""
    else:
        words = text.split()
        joiner = " "
    pieces, current, current_tokens = [], [], 0
    for word in words:
        tokens = max(count(word), 1)
        if current and current_tokens + tokens > max_tokens:
            pieces.append(joiner.join(current).strip())
            current, current_tokens = [], 0
        current.append(word)
        current_tokens += tokens
    if current:
        pieces.append(joiner.join(current).strip())
    return [p for p in pieces if p]


def _units_from_sections(
    sections: Iterable[Section], sizes: ChunkSizes, count: TokenCounter
) -> list[_Unit]:
    units: list[_Unit] = []
    for paragraph, section in enumerate(sections):
        text = (section.text or "").strip()
        if section.kind == "title":
            continue  # titles live on as the heading path of what follows them
        if not text and not section.table_rows:
            continue
        path = tuple(h for h in section.heading_path if h)
        base = dict(
            heading_path=path,
            page=section.page,
            sheet=section.sheet or "",
            slide=section.slide,
            paragraph=paragraph,
        )
        if section.kind == "table" and section.table_rows:
            header = section.table_header.strip()
            for row in section.table_rows:
                row = row.strip()
                if row:
                    units.append(_Unit(row, count(row), "table", table_header=header, **base))
            continue
        kind = section.kind if section.kind in {"text", "list", "code", "table", "toc"} else "text"
        for piece in _split_to_fit(text, sizes.chunk_tokens, count):
            units.append(_Unit(piece, count(piece), kind, **base))
    return units


def _split_to_fit(text: str, max_tokens: int, count: TokenCounter) -> list[str]:
    """A paragraph as-is when it fits, else its sentences, else word-bounded pieces."""
    if count(text) <= max_tokens:
        return [text]
    out: list[str] = []
    for sentence in split_sentences(text):
        if count(sentence) <= max_tokens:
            out.append(sentence)
        else:
            out.extend(split_words(sentence, max_tokens, count))
    return out


def _join(units: Sequence[_Unit]) -> str:
    if not units:
        return ""
    if units[0].kind == "table":
        header = units[0].table_header
        rows = "\n".join(u.text for u in units)
        return f"{header}\n{rows}" if header else rows
    sep = "\n" if any(u.kind in {"list", "code"} for u in units) else "\n\n"
    out = units[0].text
    for prev, unit in zip(units, units[1:], strict=False):
        if unit.paragraph == prev.paragraph:
            # Pieces of one paragraph: no break, and no space between Chinese sentences.
            glue = "" if has_cjk(prev.text[-1:]) or has_cjk(unit.text[:1]) else " "
        else:
            glue = sep
        out += glue + unit.text
    return out


def _pack(units: list[_Unit], limit: int, breaks: Callable[[_Unit, _Unit], bool]) -> list[_Chunk]:
    chunks: list[_Chunk] = []
    current = _Chunk()
    for unit in units:
        if current.units and (
            current.tokens + unit.tokens > limit or breaks(current.units[-1], unit)
        ):
            chunks.append(current)
            current = _Chunk()
        current.units.append(unit)
        current.tokens += unit.tokens
    if current.units:
        chunks.append(current)
    return chunks


def _with_overlap(children: list[_Chunk], overlap: int) -> list[list[_Unit]]:
    """Prefix each child with the tail units of the previous one (same place), up to overlap."""
    out = []
    for i, child in enumerate(children):
        units = list(child.units)
        if i and overlap > 0:
            prev = children[i - 1].units
            carried: list[_Unit] = []
            budget = overlap
            for unit in reversed(prev):
                if unit.tokens > budget or unit.place() != units[0].place():
                    break
                if unit.kind == "table":  # the header is repeated anyway
                    break
                carried.insert(0, unit)
                budget -= unit.tokens
            units = carried + units
        out.append(units)
    return out


def chunk_sections(
    sections: Iterable[Section], *, sizes: ChunkSizes, count_tokens: TokenCounter
) -> list[ChunkDraft]:
    units = _units_from_sections(sections, sizes, count_tokens)
    parents = _pack(units, sizes.parent_tokens, lambda a, b: a.group() != b.group())
    drafts: list[ChunkDraft] = []
    for parent in parents:
        children = _pack(
            parent.units,
            sizes.chunk_tokens,
            lambda a, b: a.place() != b.place() or a.group() != b.group(),
        )
        parent_index = None
        if len(children) > 1:
            parent_index = len(drafts)
            drafts.append(_draft(parent.units, count_tokens, is_parent=True))
        for units in _with_overlap(children, sizes.overlap_tokens):
            drafts.append(_draft(units, count_tokens, parent_index=parent_index))
    return drafts


def _draft(
    units: Sequence[_Unit],
    count: TokenCounter,
    *,
    is_parent: bool = False,
    parent_index: int | None = None,
) -> ChunkDraft:
    text = _join(units)
    pages = [u.page for u in units if u.page is not None]
    first = units[0]
    return ChunkDraft(
        text=text,
        token_count=count(text) if is_parent else sum(u.tokens for u in units),
        heading_path=HEADING_SEPARATOR.join(first.heading_path),
        page=min(pages) if pages else None,
        page_end=max(pages) if pages and max(pages) != min(pages) else None,
        sheet=first.sheet,
        slide=first.slide,
        kind=first.kind,
        is_parent=is_parent,
        parent_index=parent_index,
    )
