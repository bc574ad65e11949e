"""Types and helpers shared by the format parsers (plain Python, no Django)."""

from __future__ import annotations

import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path

from textkit import CJK_IDEOGRAPHS, CJK_PUNCTUATION, detect_language  # noqa: F401 - parsing reads it here


class ParseError(Exception):
    """Permanent failure with a message a user understands, e.g. 'PDF is encrypted',
    'file is empty', 'not a valid DOCX archive'."""


class TransientParseError(Exception):
    """Worth retrying (e.g. URL fetch timed out, OCR subprocess killed)."""


@dataclass(frozen=True)
class Section:
    text: str
    kind: str = "text"  # "text" | "title" | "list" | "table" | "code"
    heading_path: tuple[str, ...] = ()
    level: int | None = None
    page: int | None = None
    sheet: str = ""
    slide: int | None = None
    table_header: str = ""
    table_rows: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParsedDocument:
    sections: list[Section]
    page_count: int | None
    language: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParseLimits:
    max_uncompressed_bytes: int = 500 * 1024 * 1024
    max_sheet_rows: int = 200_000
    max_text_chars: int = 20_000_000
    url_timeout: float = 20.0
    url_max_bytes: int = 20 * 1024 * 1024
    url_allow_private: bool = False  # fetch from 10/8, 172.16/12, 192.168/16 (intranet)
    ocr_languages: str = "chi_sim+eng"
    ocr_dpi: int = 200
    max_image_pixels: int = 100_000_000  # larger images are refused before they are decoded
    ocr_max_seconds: float = 300.0  # OCR time per document, all pages and images together


Progress = Callable[[float], None] | None


@dataclass
class OcrClock:
    """OCR seconds spent on one document; its attachments' contexts share it."""

    spent: float = 0.0


@dataclass
class Context:
    """What one parse_file call carries around: limits, progress callback, warnings."""

    limits: ParseLimits
    progress: Progress = None
    warnings: list[str] = field(default_factory=list)
    depth: int = 0  # nesting level for e-mail attachments
    ocr_clock: OcrClock = field(default_factory=OcrClock)

    def ocr_seconds_left(self) -> float:
        return self.limits.ocr_max_seconds - self.ocr_clock.spent

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def report(self, fraction: float) -> None:
        if self.progress is not None:
            self.progress(min(1.0, max(0.0, float(fraction))))


# --------------------------------------------------------------------------- text helpers

_WS_RE = re.compile(r"[ \t\r\f\v\u00a0\u2000-\u200b\u3000\ufeff]+")
_CJK_TEXT = f"[{CJK_PUNCTUATION}{CJK_IDEOGRAPHS}]"
_CJK_GAP_RE = re.compile(f"(?<={_CJK_TEXT}) (?={_CJK_TEXT})")
_CTRL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def clean_inline(text: str) -> str:
    """Collapse all whitespace (newlines included) to single spaces."""
    text = _CTRL_RE.sub("", text)
    return _WS_RE.sub(" ", text.replace("\n", " ")).strip()


def clean_block(text: str) -> str:
    """Normalise spaces inside lines, keep line breaks, drop blank runs."""
    text = _CTRL_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [_WS_RE.sub(" ", ln).strip() for ln in text.split("\n")]
    out: list[str] = []
    for ln in lines:
        if ln or (out and out[-1]):
            out.append(ln)
    return "\n".join(out).strip()


def clean_code(text: str) -> str:
    text = _CTRL_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).expandtabs(4)
    lines = [ln.rstrip() for ln in text.split("\n")]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def join_cjk_spaces(text: str) -> str:
    """OCR engines put spaces between Chinese characters; remove them."""
    return _CJK_GAP_RE.sub("", text)


# Unicode ranges whose characters are normal in real documents. Anything else (rare scripts,
# private use, unassigned, controls, replacement characters) counts towards "garbage".
_ALLOWED_RANGES: tuple[tuple[int, int], ...] = (
    (0x0020, 0x007E),  # ASCII
    (0x00A0, 0x024F),  # Latin-1 supplement, Latin extended A/B
    (0x0250, 0x02FF),  # IPA, spacing modifiers
    (0x0300, 0x036F),  # combining diacritics
    (0x0370, 0x03FF),  # Greek
    (0x0400, 0x04FF),  # Cyrillic
    (0x0590, 0x05FF),  # Hebrew
    (0x0600, 0x06FF),  # Arabic
    (0x0900, 0x097F),  # Devanagari
    (0x0E00, 0x0E7F),  # Thai
    (0x1E00, 0x1EFF),  # Latin extended additional (Vietnamese)
    (0x2000, 0x2BFF),  # punctuation, super/subscripts, currency, letterlike, arrows, math,
    #                     technical, box drawing, shapes, dingbats
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3000, 0x30FF),  # CJK symbols, kana
    (0x3100, 0x312F),  # bopomofo
    (0x31F0, 0x31FF),
    (0x3200, 0x33FF),  # enclosed CJK, compatibility
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),
    (0xFB00, 0xFB06),  # ligatures (fi, fl)
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF00, 0xFFEF),  # full-width forms
    (0x1D400, 0x1D7FF),  # mathematical alphanumerics (LaTeX PDFs)
    (0x1F300, 0x1FAFF),  # emoji
    (0x20000, 0x2FA1F),  # CJK extensions
)
_ALLOWED_STARTS = [a for a, _ in _ALLOWED_RANGES]


def _allowed(o: int) -> bool:
    import bisect

    i = bisect.bisect_right(_ALLOWED_STARTS, o) - 1
    return i >= 0 and o <= _ALLOWED_RANGES[i][1]


_LEADER_RE = re.compile(r"(?:\.\s*){3,}|(?:…\s*){2,}|[-_=~*]{4,}")
_LATIN_WORD_RE = re.compile(r"[A-Za-z\u00c0-\u024f]{2,}")
_VOWEL_RE = re.compile(
    r"[aeiouyAEIOUY\u00c0-\u00c6\u00c8-\u00cf\u00d2-\u00d6\u00d8-\u00dd\u00e0-\u00e6\u00e8-\u00ef\u00f2-\u00f6\u00f8-\u00fd\u0100-\u0105\u0112-\u011b\u012a-\u0131\u014c-\u0151\u016a-\u0173]"
)


def garbage_score(text: str) -> float:
    """Share (0..1) of a text that looks like extraction garbage rather than language.

    General signals, none tuned to one file: replacement / private-use / control / unassigned
    characters; letters from scripts that real documents rarely mix in (what broken PDF font
    maps typically map glyphs to); Latin-1 mojibake (accented letters dominating Latin text);
    "words" without vowels dominating Latin text; symbol soup with few letters.
    """
    text = _LEADER_RE.sub(" ", text)
    chars = [c for c in text if not c.isspace()]
    n = len(chars)
    if n == 0:
        return 0.0
    bad = 0
    ascii_letters = latin1_letters = letters = symbols = 0
    non_ascii = 0
    for c in chars:
        o = ord(c)
        if o >= 0x80:
            non_ascii += 1
        if o < 0x80:
            if c.isalpha():
                ascii_letters += 1
                letters += 1
            elif o < 0x20 or o == 0x7F:
                bad += 1
            elif not c.isdigit():
                symbols += 1
            continue
        if c in "\ufffd\ufffe\uffff" or not _allowed(o):
            bad += 1
            continue
        cat = unicodedata.category(c)
        if cat in ("Co", "Cn", "Cs", "Cc"):
            bad += 1
        elif cat[0] == "L":
            letters += 1
            if 0xC0 <= o <= 0xFF:
                latin1_letters += 1
        elif 0x80 <= o <= 0xBF:
            latin1_letters += 1  # '¤', '§', '¡' ... as found in mis-decoded CJK
    score = bad / n
    # text mixing a real script with garbage: judge the non-ASCII part on its own
    non_ascii_bad = bad - sum(1 for c in chars if ord(c) < 0x20 or ord(c) == 0x7F)
    if non_ascii >= 30 and non_ascii_bad / non_ascii >= 0.45:
        score = max(score, non_ascii_bad / non_ascii)
    latin_total = ascii_letters + latin1_letters
    if latin1_letters >= 10 and latin1_letters > 0.3 * latin_total:
        score += latin1_letters / n
    words = _LATIN_WORD_RE.findall(text)
    if len(words) >= 20:
        implausible = sum(
            1 for w in words if not _VOWEL_RE.search(w) or len(w) > 30 or _mixed_case(w)
        )
        if implausible / len(words) > 0.5:
            score += 0.5 * implausible / len(words)
    if n >= 40 and letters < 0.25 * n and symbols > 0.4 * n:
        score += 0.3
    return min(1.0, score)


def _mixed_case(w: str) -> bool:
    # "tHiSwOrD"-like alternations are rare in language; "iPhone", "PostgreSQL" have <= 3 switches
    switches = sum(1 for a, b in zip(w, w[1:], strict=False) if a.islower() != b.islower())
    return switches > 3


# --------------------------------------------------------------------------- value formatting


def format_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value) if abs(value) < 1e-4 or abs(value) >= 1e15 else f"{value:.10g}"
    if isinstance(value, datetime):
        if value.time() == time(0, 0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    return clean_inline(str(value))


_NUMBER_RE = re.compile(r"^[-+(]?[$€£¥%]?\s*\d[\d,.\s]*%?\)?$|^\d{4}-\d{2}-\d{2}")


def looks_typed(cell: object) -> bool:
    """A number/date/bool (or a string that spells one)."""
    if cell is None:
        return False
    if isinstance(cell, bool | int | float | date | datetime | time):
        return True
    s = str(cell).strip()
    return bool(s) and bool(_NUMBER_RE.match(s)) or s.upper() in ("TRUE", "FALSE")


# --------------------------------------------------------------------------- builder


class SectionBuilder:
    """Accumulates sections and keeps the heading path from titles."""

    def __init__(self, base_path: Sequence[str] = ()) -> None:
        self.sections: list[Section] = []
        self.base = tuple(base_path)
        self.stack: list[tuple[int, str]] = []

    def path(self) -> tuple[str, ...]:
        return self.base + tuple(t for _, t in self.stack)

    def reset(self) -> None:
        self.stack = []

    def title(self, text: str, level: int, **kw: object) -> None:
        text = clean_inline(text)
        if not text:
            return
        level = max(1, int(level))
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.sections.append(
            Section(text=text, kind="title", heading_path=self.path(), level=level, **kw)
        )
        self.stack.append((level, text))

    def add(self, text: str, kind: str = "text", **kw: object) -> None:
        if kind == "code":
            text = clean_code(text)
        else:
            text = clean_block(text)
        if not text.strip():
            return
        self.sections.append(Section(text=text, kind=kind, heading_path=self.path(), **kw))

    def table(
        self, rows: Iterable[Sequence[str]], *, header_first: bool = True, **kw: object
    ) -> None:
        """rows: cell strings. The first non-empty row is the header when header_first."""
        clean_rows: list[str] = []
        header = ""
        for row in rows:
            cells = [clean_inline(c) for c in row]
            while cells and not cells[-1]:
                cells.pop()
            if not any(cells):
                continue
            line = " | ".join(cells)
            if header_first and not header and not clean_rows:
                header = line
            else:
                clean_rows.append(line)
        if not header and not clean_rows:
            return
        if header and not clean_rows:
            # a one-row "table" is just text
            self.add(header.replace(" | ", " "), **kw)  # type: ignore[arg-type]
            return
        text = "\n".join(([header] if header else []) + clean_rows)
        self.sections.append(
            Section(
                text=text,
                kind="table",
                heading_path=self.path(),
                table_header=header,
                table_rows=tuple(clean_rows),
                **kw,  # type: ignore[arg-type]
            )
        )


# --------------------------------------------------------------------------- zip safety


def open_zip_checked(path: Path, limits: ParseLimits, what: str) -> zipfile.ZipFile:
    """Open a zip container after checking the declared sizes (no decompression).

    Python's zipfile never yields more bytes than a member's declared size, so refusing when the
    declared sizes sum above the limit is a real bound."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ParseError(f"not a valid {what} archive (damaged ZIP container)") from exc
    infos = zf.infolist()
    if len(infos) > 20_000:
        zf.close()
        raise ParseError(f"{what} archive has too many members ({len(infos)})")
    total = sum(i.file_size for i in infos)
    if total > limits.max_uncompressed_bytes:
        zf.close()
        raise ParseError(
            f"{what} archive would expand to {total / 2**20:.0f} MB, more than the "
            f"{limits.max_uncompressed_bytes / 2**20:.0f} MB limit (possible zip bomb)"
        )
    return zf
