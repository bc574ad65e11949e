"""PDF with pypdfium2 (text layer + line geometry + outline), OCR fallback with tesseract
for pages without a usable text layer; images (PNG/JPEG/...) through the same OCR."""

from __future__ import annotations

import re
import statistics
import threading
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .base import (
    Context,
    ParseError,
    Section,
    SectionBuilder,
    TransientParseError,
    clean_inline,
    garbage_score,
)
from .ocr import OCR_TIMEOUT_S, OcrTimeout, OcrUnavailable, ocr_image, ocr_languages
from .text import _BULLET_RE, split_paragraphs

# pdfium is not thread-safe: serialise calls into it within this process.
_PDFIUM_LOCK = threading.RLock()

GARBAGE_THRESHOLD = 0.3  # garbage_score at or above which a page's text layer is not trusted
MIN_TEXT_CHARS = 20  # fewer non-space characters than this + an image on the page: scanned
MAX_RENDER_PIXELS = 40_000_000

_BULLET_CHARS = "•·▪◦‣●○■□"
_TERMINAL = tuple(".!?:;。！？：；」』”）)")
_LEADERS_RE = re.compile(r"(?:\s*\.){4,}\s*|(?:\s*…){2,}\s*")


@dataclass
class _Line:
    text: str
    left: float = 0.0
    bottom: float = 0.0
    right: float = 0.0
    top: float = 0.0
    geometry: bool = False
    para_break: bool = False  # OCR lines: a blank line preceded this one

    @property
    def height(self) -> float:
        return self.top - self.bottom


@dataclass
class _Page:
    lines: list[_Line] = field(default_factory=list)
    ocr: str = ""  # "" | "scan" | "garbage"


def _raise_open_error(exc: Exception) -> None:
    import pypdfium2.raw as raw

    code = getattr(exc, "err_code", None)
    if code == raw.FPDF_ERR_PASSWORD:
        raise ParseError("PDF is encrypted (password protected)") from exc
    if code == raw.FPDF_ERR_SECURITY:
        raise ParseError("PDF uses an unsupported security handler (encrypted)") from exc
    raise ParseError("PDF is damaged or not a valid PDF") from exc


def _page_ranges(pages: list[int]) -> str:
    pages = sorted(pages)
    out: list[str] = []
    start = prev = pages[0]
    for p in pages[1:] + [None]:  # type: ignore[list-item]
        if p is not None and p == prev + 1:
            prev = p
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if p is not None:
            start = prev = p
    return ", ".join(out)


def parse_pdf(path: Path, ctx: Context) -> tuple[list[Section], int]:
    import pypdfium2 as pdfium

    with _PDFIUM_LOCK:
        try:
            doc = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as exc:
            _raise_open_error(exc)
        n = len(doc)
        outline = _outline(doc)
    if n == 0:
        raise ParseError("PDF has no pages")
    pages: list[_Page] = []
    scanned: list[int] = []
    garbage: list[int] = []
    skipped: list[int] = []
    unreadable: list[int] = []
    out_of_time: list[int] = []  # pages that needed OCR after the document's OCR time ran out
    ocr_state: dict[str, object] = {}
    try:
        for i in range(n):
            page = _Page()
            with _PDFIUM_LOCK:
                try:
                    pg = doc[i]
                except pdfium.PdfiumError:
                    unreadable.append(i + 1)
                    pages.append(page)
                    continue
                try:
                    lines = _text_lines(pg)
                    text = "\n".join(ln.text for ln in lines)
                    nchars = sum(1 for c in text if not c.isspace())
                    reason = ""
                    if nchars < MIN_TEXT_CHARS:
                        if _has_image(pg, pdfium):
                            reason = "scan"
                    elif garbage_score(text) >= GARBAGE_THRESHOLD:
                        reason = "garbage"
                    image = (
                        _render(pg, _ocr_dpi(pg, ctx.limits.ocr_dpi, pdfium))
                        if reason and ctx.ocr_seconds_left() > 0
                        else None
                    )
                finally:
                    pg.close()
            if reason:
                ocr_lines = _ocr(image, ctx, ocr_state) if image is not None else _NO_TIME
                if ocr_lines is _NO_TIME:
                    out_of_time.append(i + 1)
                    if reason == "garbage":
                        lines = []
                elif ocr_lines is None:  # OCR unavailable
                    skipped.append(i + 1)
                    if reason == "garbage":
                        lines = []
                elif ocr_lines or reason == "garbage":
                    ocr_text = "\n".join(ln.text for ln in ocr_lines)
                    if reason == "garbage" and garbage_score(ocr_text) > garbage_score(text):
                        lines = []  # neither is readable
                    else:
                        lines = ocr_lines
                    (scanned if reason == "scan" else garbage).append(i + 1)
                    page.ocr = reason
            page.lines = lines
            pages.append(page)
            ctx.report((i + 1) / n)
    finally:
        with _PDFIUM_LOCK:
            doc.close()

    if scanned:
        ctx.warn(f"pages {_page_ranges(scanned)} had no text layer and were OCR'd")
    if garbage:
        ctx.warn(
            f"pages {_page_ranges(garbage)} had an unreadable text layer "
            "(broken font encoding) and were OCR'd"
        )
    if unreadable:
        ctx.warn(f"pages {_page_ranges(unreadable)} are damaged and could not be read")
    if skipped:
        msg = ocr_state.get("unavailable") or "OCR unavailable"
        ctx.warn(f"{msg}; pages {_page_ranges(skipped)} need OCR and were skipped")
    if ocr_state.get("missing"):
        ctx.warn(f"OCR language data missing: {ocr_state['missing']}")
    if out_of_time:
        ctx.warn(
            f"pages {_page_ranges(out_of_time)} need OCR and were skipped: OCR took too long "
            f"(at most {ctx.limits.ocr_max_seconds:g} s per document, "
            f"{OCR_TIMEOUT_S} s per page)"
        )

    _strip_headers_footers(pages, outline)
    sections = _build_sections(pages, outline)
    if not sections:
        if skipped:
            raise ParseError("no text could be extracted (scanned PDF and OCR is unavailable)")
        if out_of_time:
            raise ParseError(
                "no text could be extracted: OCR of this scanned PDF took too long "
                f"(at most {ctx.limits.ocr_max_seconds:g} s per document)"
            )
        if unreadable and len(unreadable) == n:
            raise ParseError("PDF is damaged or not a valid PDF")
        raise ParseError("no text could be extracted from the PDF")
    return sections, n


def _outline(doc) -> list[tuple[int, str, int]]:
    out: list[tuple[int, str, int]] = []
    try:
        for bm in doc.get_toc(max_depth=6):
            title = clean_inline(bm.get_title() or "")
            dest = bm.get_dest()
            idx = dest.get_index() if dest is not None else None
            if title and idx is not None and idx >= 0:
                out.append((bm.level + 1, title, idx))
            if len(out) > 5000:
                break
    except Exception:
        return []
    return out


def _text_lines(pg) -> list[_Line]:
    tp = pg.get_textpage()
    try:
        full = tp.get_text_range()
        if not full.strip():
            return []
        out: list[_Line] = []
        idx = 0
        geometry = True
        for raw_line in full.split("\r\n"):
            n = len(raw_line)
            line = _LEADERS_RE.sub(" … ", raw_line.replace("\ufffe", "\u00ad"))
            if geometry and n:
                try:
                    if tp.get_text_range(idx, n) != raw_line:
                        geometry = False
                    else:
                        nr = tp.count_rects(idx, n)
                        rects = [tp.get_rect(k) for k in range(nr)]
                        if rects:
                            out.append(
                                _Line(
                                    line,
                                    min(r[0] for r in rects),
                                    min(r[1] for r in rects),
                                    max(r[2] for r in rects),
                                    max(r[3] for r in rects),
                                    True,
                                )
                            )
                            idx += n + 2
                            continue
                except Exception:
                    geometry = False
            idx += n + 2
            if line.strip():
                out.append(_Line(line))
        return [ln for ln in out if ln.text.strip()]
    finally:
        tp.close()


def _has_image(pg, pdfium) -> bool:
    try:
        for _ in pg.get_objects(filter=[pdfium.raw.FPDF_PAGEOBJ_IMAGE], max_depth=3):
            return True
    except Exception:
        return True
    return False


def _ocr_dpi(pg, dpi: int, pdfium) -> int:
    """Scans: render at the scan's own resolution (upsampling an image does not help OCR and
    costs time), but at least 150 dpi and at most the configured dpi."""
    try:
        best = None
        for obj in pg.get_objects(filter=[pdfium.raw.FPDF_PAGEOBJ_IMAGE], max_depth=3):
            x0, y0, x1, y1 = obj.get_bounds()
            area = (x1 - x0) * (y1 - y0)
            if best is None or area > best[0]:
                best = (area, obj.get_metadata().horizontal_dpi)
        w, h = pg.get_size()
        if best and best[0] > 0.5 * w * h and best[1] and best[1] > 0:
            return int(min(dpi, max(150.0, best[1])))
    except Exception:
        pass
    return dpi


def _render(pg, dpi: int):
    w, h = pg.get_size()
    scale = dpi / 72
    if w * h * scale * scale > MAX_RENDER_PIXELS:
        scale = (MAX_RENDER_PIXELS / (w * h)) ** 0.5
    return pg.render(scale=scale, grayscale=True).to_pil()


_NO_TIME: list[_Line] = []  # sentinel: this page was not OCR'd for lack of time


def _ocr(image, ctx: Context, state: dict[str, object]) -> list[_Line] | None:
    """The page's OCR lines; None when OCR is unavailable, _NO_TIME when it took too long."""
    if state.get("unavailable"):
        return None
    try:
        langs, missing = ocr_languages(ctx.limits.ocr_languages)
        if missing:
            state["missing"] = "+".join(missing)
        text = ocr_timed(image, langs, ctx)
    except OcrUnavailable as exc:
        state["unavailable"] = str(exc)
        return None
    except OcrTimeout:
        return _NO_TIME
    return ocr_text_lines(text)


def ocr_timed(image, languages: str, ctx: Context) -> str:
    """OCR within what is left of the document's OCR time (OcrTimeout past it)."""
    left = ctx.ocr_seconds_left()
    too_long = f"OCR took too long (at most {ctx.limits.ocr_max_seconds:g} s per document)"
    if left <= 0:
        raise OcrTimeout(too_long)
    started = time.monotonic()
    try:
        return ocr_image(image, languages, timeout=min(OCR_TIMEOUT_S, left))
    except OcrTimeout as exc:
        if left < OCR_TIMEOUT_S:  # it was the document's time that ran out
            raise OcrTimeout(too_long) from exc
        raise
    finally:
        ctx.ocr_clock.spent += time.monotonic() - started


def ocr_text_lines(text: str) -> list[_Line]:
    lines: list[_Line] = []
    for para in split_paragraphs(text):
        first = True
        for ln in para.split("\n"):
            if ln.strip():
                lines.append(_Line(_LEADERS_RE.sub(" … ", ln), para_break=first))
                first = False
    return lines


# --------------------------------------------------------------------------- headers/footers

_ROMAN_RE = re.compile(r"^[ivxlcdm]+$", re.I)
_PAGE_NO_RE = re.compile(
    r"^(?:[-–—\s]*\d{1,4}[-–—\s]*|[ivxlcdm]{1,7}|page\s+\d+(\s+of\s+\d+)?|第\s*\d+\s*页(\s*共\s*\d+\s*页)?|\d+\s*/\s*\d+)$",
    re.I,
)


def _edge_key(text: str) -> str:
    t = re.sub(r"\s+", " ", text.strip().lower())
    toks = t.split(" ")
    if toks and _ROMAN_RE.match(toks[0]):
        toks[0] = "#"
    if len(toks) > 1 and _ROMAN_RE.match(toks[-1]):
        toks[-1] = "#"
    return re.sub(r"\d+", "#", " ".join(toks))


_EDGE_NUM_RE = re.compile(r"^\s*(\d{1,4})\b|\b(\d{1,4})\s*$")


def _edge_number(text: str) -> int | None:
    m = _EDGE_NUM_RE.search(text)
    if not m:
        return None
    return int(m.group(1) or m.group(2))


def _strip_headers_footers(pages: list[_Page], outline: list[tuple[int, str, int]]) -> None:
    """Drop running headers/footers: lines among the first/last two of a page whose text
    (digits masked) repeats at page edges; first/last lines that carry the page number
    (a number that is the page index plus a document-wide constant offset); bare page
    numbers at page edges. Lines that are outline (bookmark) titles are kept."""
    n = len(pages)
    counts: Counter[str] = Counter()
    offsets: Counter[int] = Counter()
    for i, p in enumerate(pages):
        edge = p.lines[:2] + p.lines[-2:] if len(p.lines) > 4 else p.lines
        for key in {_edge_key(ln.text) for ln in edge}:
            counts[key] += 1
        for ln in {id(x): x for x in (p.lines[:1] + p.lines[-1:])}.values():
            num = _edge_number(ln.text)
            if num is not None:
                offsets[i - num] += 1
    offset = None
    if offsets:
        off, c = offsets.most_common(1)[0]
        if c >= max(3, 0.3 * n):
            offset = off
    titles: dict[int, list[str]] = {}
    for _, title, idx in outline:
        titles.setdefault(idx, []).append(_norm(title))
    if n >= 3:
        repeated = {
            k
            for k, c in counts.items()
            if len(k) <= 120 and ((c >= 3 and "#" in k) or c >= max(3, 0.5 * n))
        }
    else:
        repeated = set()
    for i, p in enumerate(pages):
        m = len(p.lines)
        keep = []
        for j, ln in enumerate(p.lines):
            at_edge = j < 2 or j >= m - 2
            if at_edge and (
                _PAGE_NO_RE.match(ln.text.strip())
                or _edge_key(ln.text) in repeated
                or (
                    offset is not None
                    and (j == 0 or j == m - 1)
                    and len(ln.text) <= 120
                    and _edge_number(ln.text) == i - offset
                )
            ):
                if not any(_matches_title(ln.text, t) for t in titles.get(i, ())):
                    continue
            keep.append(ln)
        p.lines = keep


# --------------------------------------------------------------------------- sections


def _norm(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).lower()
    return re.sub(r"[\s\u00ad]+", "", s)


_NUMBERING_RE = re.compile(
    r"^(?:chapter|part|section|appendix|annex|第|§)?[0-9a-z一二三四五六七八九十百零.、:：\-–]{0,10}(?:章|节|部分|篇)?$"
)


def _matches_title(line: str, title_norm: str) -> bool:
    ln = _norm(line)
    if not ln or not title_norm:
        return False
    if ln == title_norm:
        return True
    if ln.endswith(title_norm):
        return bool(_NUMBERING_RE.match(ln[: -len(title_norm)]))
    if ln.startswith(title_norm):  # "Introduction 1" in some layouts
        return bool(re.fullmatch(r"[0-9ivxlcdm.]{0,6}", ln[len(title_norm) :]))
    return False


def _join(a: str, b: str) -> str:
    if not a:
        return b
    if a.endswith("\u00ad"):
        return a[:-1] + b
    last, first = a[-1], b[:1]
    if _wide(last) and _wide(first):
        return a + b
    return a + " " + b


def _wide(ch: str) -> bool:
    return bool(ch) and unicodedata.east_asian_width(ch) in ("W", "F")


def _build_sections(pages: list[_Page], outline: list[tuple[int, str, int]]) -> list[Section]:
    b = SectionBuilder()
    by_page: dict[int, list[tuple[int, str, str]]] = {}
    for level, title, idx in outline:
        by_page.setdefault(idx, []).append((level, title, _norm(title)))
    heights = [ln.height for p in pages for ln in p.lines if ln.geometry and ln.height > 0]
    body_h = statistics.median(heights) if heights else 0.0
    size_levels: dict[float, int] = {}
    if not outline and body_h:
        # no bookmarks: lines in clearly bigger fonts are headings, biggest = level 1
        big = sorted(
            {round(h) for h in heights if h >= 1.3 * body_h},
            reverse=True,
        )
        size_levels = {h: k + 1 for k, h in enumerate(big[:3])}

    for pno, page in enumerate(pages):
        pending = list(by_page.get(pno, []))
        lines = page.lines
        # bookmarks whose title is not on the page apply from the top of the page
        texts = {_norm(ln.text) for ln in lines}
        para: list[str] = []
        kind = "text"
        para_left = 0.0
        prev: _Line | None = None
        page_kw = {"page": pno + 1}

        def flush(page_kw: dict = page_kw) -> None:
            nonlocal para, kind
            if para:
                text = ""
                for piece in para:
                    text = _join(text, piece.strip())
                b.add(text.replace("\u00ad", ""), kind, **page_kw)
            para = []
            kind = "text"

        unmatched = [bm for bm in pending if not any(_matches_title(t, bm[2]) for t in texts)]
        for level, title, _ in unmatched:
            _push_heading(b, level, title)
        pending = [bm for bm in pending if bm not in unmatched]
        geo_lines = [ln for ln in lines if ln.geometry]
        if geo_lines:
            lefts = [round(ln.left) for ln in geo_lines]
            body_left = Counter(lefts).most_common(1)[0][0]
            right_edge = max(ln.right for ln in geo_lines)
            gaps = [
                a.bottom - c.top
                for a, c in zip(geo_lines, geo_lines[1:], strict=False)
                if a.bottom - c.top > -1
            ]
            med_gap = statistics.median(gaps) if gaps else 0.0
        else:
            body_left = right_edge = med_gap = 0.0

        plain = sorted(len(ln.text.strip()) for ln in lines if not ln.geometry)
        typical_len = plain[int(len(plain) * 0.75)] if plain else 0
        for ln in lines:
            text = ln.text.strip()
            # headings from the outline
            hit = next((bm for bm in pending if _matches_title(text, bm[2])), None)
            if hit is not None:
                flush()
                pending.remove(hit)
                b.title(text, hit[0], **page_kw)
                prev = None
                continue
            if size_levels and ln.geometry and len(text) <= 150:
                lvl = size_levels.get(round(ln.height))
                if lvl and not text.endswith((".", "。", ",", "，")):
                    flush()
                    b.title(text, lvl, **page_kw)
                    prev = None
                    continue
            bullet = bool(_BULLET_RE.match(text)) or (text[:1] in _BULLET_CHARS and len(text) > 1)
            new = prev is None or bullet or ln.para_break
            if not new and ln.geometry and prev is not None and prev.geometry:
                h = max(min(ln.height, prev.height), 1.0)
                gap = prev.bottom - ln.top
                if gap > med_gap + 0.6 * h:
                    new = True
                elif (
                    kind != "list"
                    and ln.left > prev.left + 0.8 * h
                    and ln.left > body_left + 0.8 * h
                ):
                    new = True  # first-line indent
                elif (
                    kind == "list"
                    and ln.left < para_left + 0.5 * h
                    and ln.left <= body_left + 0.5 * h
                    and prev.left > ln.left + 0.5 * h
                ):
                    new = True  # back to the margin after a list item
                elif prev.right < right_edge - 0.15 * max(
                    right_edge - body_left, 1.0
                ) and prev.text.rstrip().endswith(_TERMINAL):
                    new = True
            elif not new and not ln.geometry and prev is not None:
                # OCR / no geometry: blank lines, or a clearly short previous line
                new = len(prev.text.strip()) < 0.6 * typical_len
            if new:
                flush()
                kind = "list" if bullet else "text"
                para_left = ln.left
            para.append(text)
            prev = ln
        flush()
    return b.sections


def _push_heading(b: SectionBuilder, level: int, title: str) -> None:
    while b.stack and b.stack[-1][0] >= level:
        b.stack.pop()
    b.stack.append((level, clean_inline(title)))


# --------------------------------------------------------------------------- images


def parse_image(path: Path, ctx: Context, kind: str) -> list[Section]:
    import warnings

    from PIL import Image, UnidentifiedImageError

    limit = ctx.limits.max_image_pixels
    # Pillow checks its (process-wide) limit when it opens a file, but only warns up to twice
    # that: the size is checked here, from the header, before anything is decoded.
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(im.size, limit)
                im.load()
                if getattr(im, "n_frames", 1) > 1:
                    ctx.warn("only the first frame of a multi-frame image was read")
                image = im.convert("L") if im.mode not in ("L", "1") else im.copy()
    except Image.DecompressionBombError as exc:
        raise ParseError(f"{kind} image is too large (the limit is {limit:,} pixels)") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ParseError(f"{kind} image is damaged or not a valid image") from exc
    try:
        langs, missing = ocr_languages(ctx.limits.ocr_languages)
    except OcrUnavailable as exc:
        raise ParseError(f"no text could be extracted ({exc})") from exc
    if missing:
        ctx.warn(f"OCR language data missing: {'+'.join(missing)}")
    try:
        text = ocr_timed(image, langs, ctx)
    except OcrUnavailable as exc:
        raise ParseError(f"no text could be extracted ({exc})") from exc
    except TransientParseError:
        raise
    ctx.report(1.0)
    page = _Page(lines=ocr_text_lines(text), ocr="scan")
    sections = _build_sections([page], [])
    if not sections:
        raise ParseError("no text found in the image")
    ctx.warn("image text was OCR'd")
    return sections


class ImageTooLarge(ParseError):
    pass


def _check_pixels(size: tuple[int, int], limit: int) -> None:
    width, height = size
    if width * height > limit:
        raise ImageTooLarge(
            f"image too large ({width}×{height} pixels; the limit is {limit:,} pixels)"
        )
