"""Spreadsheets: XLSX (lxml; openpyxl as the fallback), XLS (xlrd), CSV/TSV (csv module).

Each sheet becomes: notes above the table (text sections), one table section (header row
detected, every data row kept in order in table_rows), notes below the table (text)."""

from __future__ import annotations

import csv
import io
import logging
import math
import posixpath
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from .base import (
    Context,
    ParseError,
    Section,
    SectionBuilder,
    format_cell,
    looks_typed,
    open_zip_checked,
)
from .text import read_text_file

logger = logging.getLogger(__name__)


def _sheet_sections(
    b: SectionBuilder, rows_iter: Iterable[Sequence[object]], sheet: str, ctx: Context
) -> None:
    limit = ctx.limits.max_sheet_rows
    raw: list[list[object]] = []
    for i, row in enumerate(rows_iter):
        if i >= limit:
            ctx.warn(
                f"sheet '{sheet}' has more than {limit} rows; only the first {limit} were read"
            )
            break
        r = list(row)
        while r and (r[-1] is None or r[-1] == ""):
            r.pop()
        raw.append(r)
    if not raw:
        return
    cells = [[format_cell(v) for v in r] for r in raw]
    counts = [sum(1 for c in r if c) for r in cells]
    typed = [any(looks_typed(v) for v in r if v is not None and v != "") for r in raw]
    multi = [c for c in counts if c >= 2]
    width = Counter(multi).most_common(1)[0][0] if multi else 1
    need = max(2, math.ceil(0.5 * width)) if width >= 2 else 1
    dense = [c >= need for c in counts]

    first_data = next(
        (i for i, (d, t) in enumerate(zip(dense, typed, strict=True)) if d and t), None
    )
    header_idx: int | None = None
    if first_data is None:
        # an all-text table: the first dense row is the header
        first_dense = next((i for i, d in enumerate(dense) if d), None)
        if first_dense is None:
            for r in cells:
                if any(r):
                    b.add(" ".join(c for c in r if c), "text", sheet=sheet)
            return
        header_idx = first_dense
        first_data = first_dense + 1
    else:
        j = first_data - 1
        while j >= 0 and counts[j] == 0:
            j -= 1
        if j >= 0 and dense[j] and not typed[j]:
            header_idx = j
    last = max(
        (i for i in range(first_data, len(cells)) if dense[i] or typed[i]), default=first_data - 1
    )
    start = header_idx if header_idx is not None else first_data
    for r in cells[:start]:  # notes above the table
        if any(r):
            b.add(" ".join(c for c in r if c), "text", sheet=sheet)
    table = cells[start : last + 1]
    if table:
        lead = min((next(k for k, c in enumerate(r) if c) for r in table if any(r)), default=0)
        table = [r[lead:] for r in table]
        if header_idx is None:
            table = [[]] + table  # no header row
        b.table(table, header_first=True, sheet=sheet)
    for r in cells[last + 1 :]:  # notes below
        if any(r):
            b.add(" ".join(c for c in r if c), "text", sheet=sheet)


_BUILTIN_DATE_FMTS = set(range(14, 23)) | {27, 30, 36, 45, 46, 47, 50, 57}
_DATE_TOKENS_RE = re.compile(r"(?<![a-z])(y+|d+|h+|s+|m+)(?![a-z])", re.I)


def _is_date_format(code: str) -> bool:
    code = re.sub(r'"[^"]*"|\\.|\[[^\]]*\]', "", code)  # quoted text, escapes, [colors]
    return bool(_DATE_TOKENS_RE.search(code)) and not re.fullmatch(r"[#0.,%\s;()-]*", code)


_ROW_RE = re.compile(r"<row\b([^>]*?)(?:/>|>(.*?)</row>)", re.S)
_CELL_RE = re.compile(r"<c\b([^>]*?)(?:/>|>(.*?)</c>)", re.S)
_ATTR_R_RE = re.compile(r'\br="(\d+)"')
_ATTR_R_RE2 = re.compile(r'\br="([A-Z]+)\d*"')
_ATTR_T_RE = re.compile(r'\bt="(\w+)"')
_ATTR_S_RE = re.compile(r'\bs="(\d+)"')
_V_RE = re.compile(r"<v>(.*?)</v>", re.S)
_T_RE = re.compile(r"<t(?:\s[^>]*)?>(.*?)</t>", re.S)


def _unescape(s: str) -> str:
    if "&" not in s:
        return s
    import html

    return html.unescape(s)


def _fast_xlsx(zf: zipfile.ZipFile, b: SectionBuilder, ctx: Context) -> int:
    """Stream sheets with lxml iterparse (several times faster than openpyxl's read-only
    mode). Values: shared/inline strings, numbers, booleans, dates (by number format)."""
    from lxml import etree

    ns_main = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
    ns_rel = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    wb = etree.fromstring(zf.read("xl/workbook.xml"), parser)
    pr = wb.find(f"{ns_main}workbookPr")
    date1904 = pr is not None and pr.get("date1904") in ("1", "true")
    rels = etree.fromstring(zf.read("xl/_rels/workbook.xml.rels"), parser)
    targets = {r.get("Id"): r.get("Target") for r in rels}
    sheets = []
    for sh in wb.iter(f"{ns_main}sheet"):
        target = targets.get(sh.get(f"{ns_rel}id"), "")
        if not target:
            continue
        target = (
            target.lstrip("/")
            if target.startswith("/")
            else posixpath.normpath(posixpath.join("xl", target))
        )
        sheets.append((sh.get("name") or "Sheet", target))
    names = set(zf.namelist())
    shared: list[str] = []
    if "xl/sharedStrings.xml" in names:
        for _, si in etree.iterparse(
            zf.open("xl/sharedStrings.xml"),
            tag=f"{ns_main}si",
            huge_tree=True,
            resolve_entities=False,
        ):
            shared.append(
                "".join(
                    t.text or ""
                    for t in si.iter(f"{ns_main}t")
                    if t.getparent().tag != f"{ns_main}rPh"
                )
            )
            si.clear()
    date_styles: set[int] = set()
    if "xl/styles.xml" in names:
        st = etree.fromstring(zf.read("xl/styles.xml"), parser)
        custom = {
            int(f.get("numFmtId")): f.get("formatCode", "") for f in st.iter(f"{ns_main}numFmt")
        }
        xfs = st.find(f"{ns_main}cellXfs")
        if xfs is not None:
            for k, xf in enumerate(xfs.findall(f"{ns_main}xf")):
                fid = int(xf.get("numFmtId", "0"))
                if fid in _BUILTIN_DATE_FMTS or (fid in custom and _is_date_format(custom[fid])):
                    date_styles.add(k)
    base = datetime(1904, 1, 1) if date1904 else datetime(1899, 12, 30)

    def col_index(ref: str) -> int:
        n = 0
        for ch in ref:
            if "A" <= ch <= "Z":
                n = n * 26 + ord(ch) - 64
            else:
                break
        return n - 1

    def rows(member: str):
        tag_c, tag_row, tag_v, tag_is, tag_t = (
            f"{ns_main}{x}" for x in ("c", "row", "v", "is", "t")
        )
        current: list[object] = []
        last_row = 0
        for _, el in etree.iterparse(
            zf.open(member),
            events=("end",),
            tag=(tag_c, tag_row),
            huge_tree=True,
            resolve_entities=False,
        ):
            if el.tag == tag_c:
                ref = el.get("r")
                idx = col_index(ref) if ref else len(current)
                t = el.get("t")
                v = el.find(tag_v)
                val: object = None
                if t == "s":
                    if v is not None and v.text:
                        i = int(v.text)
                        val = shared[i] if 0 <= i < len(shared) else None
                elif t == "inlineStr":
                    is_ = el.find(tag_is)
                    val = (
                        "".join(x.text or "" for x in is_.iter(tag_t)) if is_ is not None else None
                    )
                elif v is not None and v.text is not None:
                    if t == "b":
                        val = v.text.strip() in ("1", "true")
                    elif t in ("str", "e"):
                        val = v.text if t == "str" else None
                    else:
                        try:
                            num = float(v.text)
                        except ValueError:
                            val = v.text
                        else:
                            if int(el.get("s", "0")) in date_styles and 0 <= num < 2958466:
                                val = base + timedelta(days=num)
                                if num < 1:  # a bare time
                                    val = val.time()
                            else:
                                val = num
                if val is not None and val != "":
                    if idx >= len(current):
                        current.extend([None] * (idx - len(current) + 1))
                    current[idx] = val
                el.clear(keep_tail=False)
            else:  # row end
                r = el.get("r")
                rno = int(r) if r and r.isdigit() else last_row + 1
                for _ in range(last_row + 1, rno):
                    yield []  # keep blank rows (they separate notes from tables)
                last_row = rno
                yield current
                current = []
                el.clear(keep_tail=False)
                while el.getprevious() is not None:
                    del el.getparent()[0]

    def fast_rows(member: str):
        """Regex scan of <row>/<c> in the decompressed XML stream (no prefixes)."""
        f = zf.open(member)
        buf = ""
        last_row = 0
        seen_data = False
        while True:
            chunk = f.read(1 << 20)
            if chunk:
                buf += chunk.decode("utf-8", errors="replace")
            end = buf.rfind("</row>") if chunk else len(buf)
            if end < 0:
                if not chunk:
                    break
                continue
            if chunk:
                end += len("</row>")
            part, buf = buf[:end], buf[end:]
            for m in _ROW_RE.finditer(part):
                seen_data = True
                rattr = _ATTR_R_RE.search(m.group(1))
                rno = int(rattr.group(1)) if rattr else last_row + 1
                for _ in range(last_row + 1, rno):
                    yield []
                last_row = rno
                current: list[object] = []
                for c in _CELL_RE.finditer(m.group(2) or ""):
                    attrs, inner = c.group(1), c.group(2) or ""
                    ref = _ATTR_R_RE2.search(attrs)
                    idx = col_index(ref.group(1)) if ref else len(current)
                    tm = _ATTR_T_RE.search(attrs)
                    t = tm.group(1) if tm else "n"
                    val: object = None
                    if t == "inlineStr":
                        val = _unescape("".join(_T_RE.findall(inner)))
                    else:
                        vm = _V_RE.search(inner)
                        if vm is None:
                            continue
                        v = vm.group(1)
                        if t == "s":
                            i = int(v)
                            val = shared[i] if 0 <= i < len(shared) else None
                        elif t == "b":
                            val = v.strip() in ("1", "true")
                        elif t == "str":
                            val = _unescape(v)
                        elif t == "e":
                            val = None
                        else:
                            try:
                                num = float(v)
                            except ValueError:
                                val = _unescape(v)
                            else:
                                sm = _ATTR_S_RE.search(attrs)
                                if sm and int(sm.group(1)) in date_styles and 0 <= num < 2958466:
                                    val = base + timedelta(days=num)
                                    if num < 1:
                                        val = val.time()
                                else:
                                    val = num
                    if val is not None and val != "":
                        if idx >= len(current):
                            current.extend([None] * (idx - len(current) + 1))
                        current[idx] = val
                yield current
            if not chunk:
                break
        if not seen_data and last_row == 0:
            return

    for k, (name, member) in enumerate(sheets, 1):
        if member not in names:
            continue
        with zf.open(member) as f:
            head = f.read(4096).decode("utf-8", "replace")
        prefixed = "<sheetData" not in head and re.search(r"<\w+:worksheet", head) is not None
        _sheet_sections(b, rows(member) if prefixed else fast_rows(member), name, ctx)
        ctx.report(k / len(sheets))
    return len(sheets)


def parse_xlsx(path: Path, ctx: Context) -> tuple[list[Section], int]:
    zf = open_zip_checked(path, ctx.limits, "XLSX")
    try:
        names = set(zf.namelist())
        if "xl/workbook.xml" not in names:
            raise ParseError("not a valid XLSX archive (xl/workbook.xml is missing)")
        b = SectionBuilder()
        # Two readers on purpose: _fast_xlsx is several times faster on big sheets (the one
        # that runs), but it reads only the parts of SpreadsheetML it knows. When it fails on
        # a workbook it did not expect (any error but a ParseError, which is the file's
        # fault), openpyxl, slower but complete, reads it again from the start rather than
        # the upload failing. Logged so that such workbooks can be added to the fast reader.
        try:
            n = _fast_xlsx(zf, b, ctx)
            return b.sections, n
        except ParseError:
            raise
        except Exception:  # noqa: BLE001 - see above
            logger.warning("XLSX %s: the fast reader failed, reading with openpyxl", path.name)
    finally:
        zf.close()
    import openpyxl

    try:
        wb = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    except Exception as exc:
        raise ParseError("not a valid XLSX workbook (could not read it)") from exc
    b = SectionBuilder()
    try:
        sheets = wb.worksheets
        for k, ws in enumerate(sheets, 1):
            if hasattr(ws, "reset_dimensions"):
                ws.reset_dimensions()  # stored dimensions are often wrong (e.g. "A1")
            if not hasattr(ws, "iter_rows"):
                continue  # chartsheets
            _sheet_sections(b, ws.iter_rows(values_only=True), ws.title, ctx)
            ctx.report(k / len(sheets))
        return b.sections, len(sheets)
    finally:
        wb.close()


def parse_xls(path: Path, ctx: Context) -> tuple[list[Section], int]:
    import xlrd

    try:
        book = xlrd.open_workbook(str(path), on_demand=True)
    except Exception as exc:
        raise ParseError("not a valid XLS workbook (could not read it)") from exc
    b = SectionBuilder()
    try:
        n = book.nsheets
        for k in range(n):
            sh = book.sheet_by_index(k)

            def rows(sh=sh):
                for r in range(sh.nrows):
                    out: list[object] = []
                    for c in sh.row(r):
                        if c.ctype == xlrd.XL_CELL_DATE:
                            try:
                                out.append(xlrd.xldate_as_datetime(c.value, book.datemode))
                            except Exception:
                                out.append(c.value)
                        elif c.ctype == xlrd.XL_CELL_BOOLEAN:
                            out.append(bool(c.value))
                        elif c.ctype in (
                            xlrd.XL_CELL_EMPTY,
                            xlrd.XL_CELL_BLANK,
                            xlrd.XL_CELL_ERROR,
                        ):
                            out.append(None)
                        else:
                            out.append(c.value)
                    yield out

            _sheet_sections(b, rows(), sh.name, ctx)
            book.unload_sheet(k)
            ctx.report((k + 1) / n)
        return b.sections, n
    finally:
        book.release_resources()


def parse_csv(data: bytes, ctx: Context, filename: str) -> tuple[list[Section], int]:
    text = read_text_file(data, ctx, "CSV file")
    sample = text[:65536]
    delimiter = "\t" if filename.lower().endswith((".tsv", ".tab")) else ","
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        pass
    csv.field_size_limit(max(csv.field_size_limit(), 10_000_000))
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    b = SectionBuilder()
    name = Path(filename).stem or "csv"
    try:
        _sheet_sections(b, ([c if c != "" else None for c in row] for row in reader), name, ctx)
    except csv.Error as exc:
        raise ParseError(f"CSV file could not be read: {exc}") from exc
    return b.sections, 1
