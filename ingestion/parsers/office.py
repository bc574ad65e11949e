"""DOCX (python-docx) and PPTX (python-pptx), read directly: exact styles and tables,
no NLP heuristics, fast."""

from __future__ import annotations

import re
from pathlib import Path

from .base import Context, ParseError, Section, SectionBuilder, clean_inline, open_zip_checked

_HEADING_STYLE_RE = re.compile(r"^(?:heading|titre|überschrift|标题|見出し)\s*(\d)$", re.I)
_CODE_STYLE_RE = re.compile(r"source ?code|code|preformatted|verbatim|plain ?text|macro", re.I)


def _check_container(path: Path, ctx: Context, what: str, required: str) -> None:
    zf = open_zip_checked(path, ctx.limits, what)
    try:
        names = set(zf.namelist())
    finally:
        zf.close()
    if required not in names:
        raise ParseError(f"not a valid {what} archive ({required} is missing)")


# --------------------------------------------------------------------------- DOCX


def parse_docx(path: Path, ctx: Context) -> list[Section]:
    _check_container(path, ctx, "DOCX", "word/document.xml")
    import docx
    from docx.oxml.ns import qn

    try:
        document = docx.Document(str(path))
    except Exception as exc:  # python-docx raises many kinds on broken packages
        raise ParseError("not a valid DOCX archive (could not read the document)") from exc

    b = SectionBuilder()
    body = document.element.body
    style_cache: dict[str, tuple[str, int | None]] = {}

    def classify(p) -> tuple[str, int | None]:
        """(kind, heading level) for a w:p element."""
        ppr = p.pPr
        style_id = None
        if ppr is not None and ppr.pStyle is not None:
            style_id = ppr.pStyle.val
        if ppr is not None:
            ol = ppr.find(qn("w:outlineLvl"))
            if ol is not None and ol.get(qn("w:val"), "").isdigit():
                lvl = int(ol.get(qn("w:val"))) + 1
                if lvl <= 9:
                    return "title", lvl
        numbered = ppr is not None and ppr.numPr is not None
        if style_id is not None:
            if style_id not in style_cache:
                style_cache[style_id] = _classify_style(document, style_id)
            kind, lvl = style_cache[style_id]
            if kind != "text":
                return kind, lvl
        return ("list" if numbered else "text"), None

    for child in body.iterchildren():
        tag = child.tag
        if tag == qn("w:p"):
            text = _para_text(child)
            if not text.strip():
                continue
            kind, lvl = classify(child)
            if kind == "title":
                b.title(text, lvl or 1)
            else:
                b.add(text, kind)
        elif tag == qn("w:tbl"):
            _docx_table(b, child, qn)
        elif tag == qn("w:sdt"):  # content controls (e.g. a table of contents): text only
            for p in child.iter(qn("w:p")):
                t = _para_text(p)
                if t.strip():
                    b.add(t, "text")
    return b.sections


def _classify_style(document, style_id: str) -> tuple[str, int | None]:
    try:
        style = document.styles.get_by_id(style_id, 1)  # WD_STYLE_TYPE.PARAGRAPH == 1
    except Exception:
        style = None
    names = [style_id]
    s = style
    depth = 0
    while s is not None and depth < 5:  # follow "based on" for custom heading styles
        if s.name:
            names.append(s.name)
        ppr = getattr(s.element, "pPr", None)
        if ppr is not None:
            from docx.oxml.ns import qn

            ol = ppr.find(qn("w:outlineLvl"))
            if (
                ol is not None
                and ol.get(qn("w:val"), "").isdigit()
                and int(ol.get(qn("w:val"))) < 9
            ):
                return "title", int(ol.get(qn("w:val"))) + 1
        s = s.base_style
        depth += 1
    for name in names:
        n = name.strip()
        m = _HEADING_STYLE_RE.match(n)
        if m:
            return "title", int(m.group(1))
        if n.lower() in ("title", "标题"):
            return "title", 1
        if n.lower() == "subtitle":
            return "title", 2
        if _CODE_STYLE_RE.search(n):
            return "code", None
        if re.search(r"list|bullet|列表", n, re.I):
            return "list", None
    return "text", None


def _para_text(p) -> str:
    from docx.oxml.ns import qn

    parts: list[str] = []
    for el in p.iter():
        tag = el.tag
        if tag == qn("w:t"):
            parts.append(el.text or "")
        elif tag == qn("w:tab"):
            parts.append("\t")
        elif tag in (qn("w:br"), qn("w:cr")):
            parts.append("\n")
        elif tag == qn("w:noBreakHyphen"):
            parts.append("-")
        elif tag == qn("w:delText"):
            continue
    return "".join(parts)


def _docx_table(b: SectionBuilder, tbl, qn) -> None:
    rows: list[list[str]] = []
    for tr in tbl.iterchildren(qn("w:tr")):
        cells: list[str] = []
        for tc in tr.iterchildren(qn("w:tc")):
            texts = [_para_text(p) for p in tc.iter(qn("w:p"))]
            cells.append(clean_inline(" ".join(t for t in texts if t.strip())))
            tcpr = tc.find(qn("w:tcPr"))
            if tcpr is not None:
                span = tcpr.find(qn("w:gridSpan"))
                if span is not None and (span.get(qn("w:val")) or "1").isdigit():
                    cells.extend([""] * (int(span.get(qn("w:val"))) - 1))
        rows.append(cells)
    nonempty = [r for r in rows if any(r)]
    if nonempty and max(len(r) for r in nonempty) == 1:
        b.add("\n".join(r[0] for r in nonempty), "text")
        return
    b.table(rows, header_first=True)


# --------------------------------------------------------------------------- PPTX


def parse_pptx(path: Path, ctx: Context) -> tuple[list[Section], int]:
    _check_container(path, ctx, "PPTX", "ppt/presentation.xml")
    import pptx
    from pptx.enum.shapes import MSO_SHAPE_TYPE, PP_PLACEHOLDER

    try:
        prs = pptx.Presentation(str(path))
    except Exception as exc:
        raise ParseError("not a valid PPTX archive (could not read the presentation)") from exc

    b = SectionBuilder()
    slides = list(prs.slides)
    n = len(slides)
    title_types = {PP_PLACEHOLDER.TITLE, PP_PLACEHOLDER.CENTER_TITLE}

    def is_title(shape) -> bool:
        if not shape.is_placeholder:
            return False
        try:
            return shape.placeholder_format.type in title_types
        except Exception:
            return False

    def emit(shape, slide_no: int) -> None:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            for s in _ordered(shape.shapes):
                emit(s, slide_no)
            return
        if getattr(shape, "has_table", False) and shape.has_table:
            rows = [[clean_inline(c.text) for c in r.cells] for r in shape.table.rows]
            b.table(rows, header_first=True, slide=slide_no)
            return
        if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            body_ph = shape.is_placeholder
            for para in shape.text_frame.paragraphs:
                text = "".join(r.text for r in para.runs) if para.runs else para.text
                text = text.replace("\x0b", "\n")
                if not text.strip():
                    continue
                kind = "list" if (para.level > 0 or (body_ph and _has_bullet(para))) else "text"
                b.add(text, kind, slide=slide_no)
            return
        if getattr(shape, "has_chart", False) and shape.has_chart:
            try:
                chart = shape.chart
                if chart.has_title and chart.chart_title.has_text_frame:
                    b.add(chart.chart_title.text_frame.text, "text", slide=slide_no)
            except Exception:
                pass

    for i, slide in enumerate(slides, 1):
        shapes = _ordered(slide.shapes)
        titles = [
            s for s in shapes if is_title(s) and s.has_text_frame and s.text_frame.text.strip()
        ]
        if titles:  # an untitled slide continues the previous slide's heading
            b.title(titles[0].text_frame.text, 1, slide=i)
        for shape in shapes:
            if titles and shape is titles[0]:
                continue
            emit(shape, i)
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            if notes is not None and notes.text.strip():
                b.add(notes.text, "text", slide=i)
        ctx.report(i / max(n, 1))
    return b.sections, n


def _ordered(shapes) -> list:
    items = list(shapes)

    def key(s):
        top = s.top if s.top is not None else 0
        left = s.left if s.left is not None else 0
        return (top // 91440, left)  # rows of ~0.1 inch, then left to right

    return sorted(items, key=key)


def _has_bullet(para) -> bool:
    ppr = para._p.pPr
    if ppr is None:
        return True  # body placeholders bullet by default
    for child in ppr:
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "buNone":
            return False
    return True
