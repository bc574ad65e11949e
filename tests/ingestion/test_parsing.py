"""Tests for ingestion.parsing: real sample documents (tests/fixtures) and generated bad inputs.

No Django, no database: run with `python -m pytest -p no:django tests/ingestion/test_parsing.py`.
Tests that need tesseract are skipped when it is not installed.
"""

from __future__ import annotations

import csv
import http.server
import os
import shutil
import socketserver
import threading
import time
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from ingestion import parsing
from ingestion.parsing import (
    ParsedDocument,
    ParseError,
    ParseLimits,
    TransientParseError,
    detect_language,
    fetch_url,
    garbage_score,
    parse_file,
)

FIX = Path(__file__).resolve().parent.parent / "fixtures"
HAS_TESSERACT = shutil.which("tesseract") is not None
needs_ocr = pytest.mark.skipif(not HAS_TESSERACT, reason="tesseract is not installed")


def parse(name: str, **kw) -> ParsedDocument:
    return parse_file(FIX / name, filename=name, **kw)


def texts(doc: ParsedDocument) -> str:
    return "\n".join(s.text for s in doc.sections)


def find(doc: ParsedDocument, phrase: str):
    hits = [s for s in doc.sections if phrase in s.text]
    assert hits, f"{phrase!r} not found"
    return hits[0]


# --------------------------------------------------------------------------- hand-built PDFs


def build_pdf(objects: list[bytes], trailer_extra: bytes = b"") -> bytes:
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R " % (len(objects) + 1) + trailer_extra
    out += b">>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def text_pdf_objects(lines: list[str], to_unicode: bytes | None = None) -> list[bytes]:
    content = (
        b"BT /F1 20 Tf 72 720 Td 26 TL "
        + b" ".join(b"(" + ln.encode("latin-1") + b") '" for ln in lines)
        + b" ET"
    )
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding"
    font += b" /ToUnicode 6 0 R >>" if to_unicode else b" >>"
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        font,
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    if to_unicode:
        objs.append(b"<< /Length %d >>\nstream\n" % len(to_unicode) + to_unicode + b"\nendstream")
    return objs


# A ToUnicode map that sends every printable ASCII code to Myanmar letters: the page renders
# as normal Helvetica text, but its text layer extracts as garbage (a broken font map).
BROKEN_CMAP = (
    b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /Broken def "
    b"1 begincodespacerange <00> <FF> endcodespacerange "
    b"1 beginbfrange <20> <7E> <1020> endbfrange "
    b"endcmap CMapName currentdict /CMap defineresource pop end end"
)


# --------------------------------------------------------------------------- language / garbage


def test_detect_language():
    assert detect_language("") == ""
    assert detect_language("12345 !!! ---") == ""
    assert detect_language("PostgreSQL indexes speed up queries.") == "en"
    assert detect_language("在 Writer 中，页码是一个可插入到文本中的字段。") == "zh"
    # mixed: ideographs are >= 20% of letters + ideographs
    assert detect_language("Debian 新维护者手册 by Josip Rodin") == "zh"
    assert detect_language("The word 中文 appears once in this long English sentence here.") == "en"


def test_garbage_score_separates_text_from_garbage():
    assert garbage_score("The quick brown fox jumps over the lazy dog. " * 5) < 0.05
    assert garbage_score("这是一个简单的中文句子，用来测试。" * 5) < 0.05
    assert garbage_score("1 Introduction . . . . . . . . . . . . . . . 1") < 0.1
    # GBK bytes decoded as Latin-1 (classic mojibake)
    mojibake = "中文文本测试，这是一个简单的例子。".encode("gbk").decode("latin-1")
    assert garbage_score(mojibake * 3) > 0.5
    # letters from unrelated scripts, as broken PDF font maps produce
    assert garbage_score("ֻ၂ᅣ LATEX ࠎ֥Чۀ୑ ߋ႒൐Ⴈ LATEXĆЧᅣष๨Ⴈ֥؋ࡥ௉ࢺږകਔ LATEX ֥টჷđಖࢺުകਔ" * 2) >= 0.3
    assert garbage_score("\ue000\ue001\ue002\ufffd\ufffd" * 10) > 0.9


# --------------------------------------------------------------------------- PDF


def test_pdf_text_layer_pages_headings_and_progress():
    seen: list[float] = []
    doc = parse("libtasn1.pdf", progress=seen.append)
    assert doc.page_count == 36
    assert doc.language == "en"
    assert doc.warnings == ()  # good text layer: nothing OCR'd
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen) and len(seen) > 30
    # page numbers are physical 1-based pages
    s = find(doc, "The SIZE constraints are allowed")
    assert s.page == 6
    assert s.heading_path == ("2 ASN.1 structure handling", "2.1 ASN.1 syntax")
    naming = [x for x in doc.sections if x.kind == "title" and x.text == "2.2 Naming"]
    assert naming and naming[0].page == 6 and naming[0].level == 2
    assert find(doc, "Thread-safety").page == 4
    assert find(doc, "Thread-safety").kind == "list"
    # running headers ("Chapter 2: ASN.1 structure handling 3") and page numbers are removed
    assert not any(x.text.startswith("Chapter 2: ASN.1 structure handling") for x in doc.sections)
    assert not any(x.text.strip().isdigit() for x in doc.sections)
    # soft hyphens at line ends are joined
    assert "manipulation" in texts(doc)


def test_pdf_chinese_text_layer_is_not_ocrd():
    # lshort-zh-cn's fonts extract as garbage with pdfminer/pypdf, pdfium maps them right
    doc = parse("lshort-zh-cn-p13-14.pdf")
    assert doc.page_count == 2
    assert doc.language == "zh"
    assert not any("OCR" in w for w in doc.warnings)
    assert "高德纳" in texts(doc)
    assert {s.page for s in doc.sections} == {1, 2}
    assert garbage_score(texts(doc)) < 0.1


@needs_ocr
def test_pdf_garbage_text_layer_falls_back_to_ocr(tmp_path):
    lines = ["Retrieval augmented generation", "combines a search engine", "with a language model."]
    p = tmp_path / "broken-font.pdf"
    p.write_bytes(build_pdf(text_pdf_objects(lines, BROKEN_CMAP)))
    doc = parse_file(p, filename=p.name, limits=ParseLimits(ocr_languages="eng"))
    assert any("unreadable text layer" in w for w in doc.warnings)
    body = texts(doc).lower()
    assert "language model" in body and "retrieval" in body
    assert garbage_score(texts(doc)) < 0.1
    assert all(s.page == 1 for s in doc.sections)


@needs_ocr
@pytest.mark.slow
def test_scanned_pdf_is_ocrd():
    doc = parse("scanned-maint-guide.zh-cn.pdf")
    assert doc.page_count == 2
    assert any("no text layer" in w and "1-2" in w for w in doc.warnings)
    body = texts(doc)
    assert "新维护者手册" in body and "debian" in body.lower()
    assert {s.page for s in doc.sections} == {1, 2}


def test_scanned_pdf_without_ocr(monkeypatch):
    from ingestion.parsers import pdf as pdfmod
    from ingestion.parsers.ocr import OcrUnavailable

    def no_ocr(_langs):
        raise OcrUnavailable("OCR unavailable: tesseract is not installed")

    monkeypatch.setattr(pdfmod, "ocr_languages", no_ocr)
    with pytest.raises(ParseError, match="no text could be extracted .*OCR is unavailable"):
        parse("scanned-maint-guide.zh-cn.pdf")


def test_encrypted_pdf(tmp_path):
    objs = text_pdf_objects(["secret"]) + [
        b"<< /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32 + b"> /P -4 >>"
    ]
    p = tmp_path / "enc.pdf"
    p.write_bytes(
        build_pdf(objs, b"/Encrypt 6 0 R /ID [<" + b"33" * 16 + b"> <" + b"33" * 16 + b">] ")
    )
    with pytest.raises(ParseError, match=r"PDF is encrypted \(password protected\)"):
        parse_file(p, filename="enc.pdf")


def test_truncated_pdf(tmp_path):
    data = (FIX / "libtasn1.pdf").read_bytes()
    p = tmp_path / "cut.pdf"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError, match="PDF is damaged or not a valid PDF"):
        parse_file(p, filename="cut.pdf")
    p.write_bytes(b"%PDF-1.7\n garbage garbage")
    with pytest.raises(ParseError, match="PDF is damaged"):
        parse_file(p, filename="x.pdf")


def test_not_a_pdf_at_all(tmp_path):
    p = tmp_path / "fake.pdf"
    p.write_bytes(b"just some words, no PDF here\n" * 10)
    with pytest.raises(ParseError, match="not a valid PDF"):
        parse_file(p, filename="fake.pdf")


def test_empty_file(tmp_path):
    for name in ("empty.pdf", "empty.txt", "empty.docx", "empty"):
        p = tmp_path / name
        p.write_bytes(b"")
        with pytest.raises(ParseError, match="file is empty"):
            parse_file(p, filename=name)


# --------------------------------------------------------------------------- images


@needs_ocr
@pytest.mark.slow
def test_png_is_ocrd():
    doc = parse("scanned-libtasn1-page3.en.png")
    assert doc.page_count == 1
    assert doc.language == "en"
    assert "Table of Contents" in texts(doc)
    assert all(s.page == 1 for s in doc.sections)


@needs_ocr
def test_png_renamed_to_pdf_is_parsed_as_png(tmp_path):
    p = tmp_path / "report.pdf"
    shutil.copy(FIX / "scanned-libtasn1-page3.en.png", p)
    doc = parse_file(
        p,
        filename="report.pdf",
        mime_type="application/pdf",
        limits=ParseLimits(ocr_languages="eng"),
    )
    assert any("content is a PNG image" in w for w in doc.warnings)
    assert "Table of Contents" in texts(doc)


def test_detect_type_trusts_content(tmp_path):
    p = tmp_path / "report.pdf"
    shutil.copy(FIX / "scanned-libtasn1-page3.en.png", p)
    assert parsing.detect_type(p, "report.pdf") == "png"
    q = tmp_path / "page.txt"
    shutil.copy(FIX / "postgresql-html/postgresql-indexes-partial.html", q)
    assert parsing.detect_type(q, "page.txt") == "html"
    assert parsing.detect_type(FIX / "easy-ham-00001.eml", "mail") == "eml"


# --------------------------------------------------------------------------- office


def test_docx_english_headings_code_tables():
    doc = parse("postgresql-indexes-intro.en.docx")
    assert doc.page_count is None and doc.language == "en"
    titles = [s for s in doc.sections if s.kind == "title"]
    assert titles and titles[0].level == 1
    s = find(doc, "Suppose we have a table similar to this")
    assert s.heading_path and s.heading_path[-1] == "11.1. Introduction"
    code = [s for s in doc.sections if s.kind == "code"]
    assert any("CREATE TABLE test1" in c.text for c in code)
    assert any(s.kind == "table" and s.table_rows for s in doc.sections)


def test_docx_chinese():
    doc = parse("libreoffice-writer-tables.zh-cn.docx")
    assert doc.language == "zh"
    s = find(doc, "选择相邻单元格")
    assert s.kind == "list"
    assert s.heading_path == ("合并和拆分单元格", "合并单元格")


def test_pptx_slides():
    doc = parse("postgresql-textsearch-intro.en.pptx")
    assert doc.page_count == 2
    assert doc.sections[0].kind == "title" and doc.sections[0].slide == 1
    s = find(doc, "Full Text Searching (or just text search)")
    assert s.slide == 2
    assert s.heading_path == ("12.1.\u00a0Introduction".replace("\u00a0", " "),)
    assert all(x.slide in (1, 2) for x in doc.sections)
    assert any(x.kind == "list" for x in doc.sections)


def test_xlsx_notes_and_tables():
    doc = parse("deaths.xlsx")
    assert doc.page_count == 2
    tables = [s for s in doc.sections if s.kind == "table"]
    assert [t.sheet for t in tables] == ["arts", "other"]
    t = tables[0]
    assert t.table_header == "Name | Profession | Age | Has kids | Date of birth | Date of death"
    assert len(t.table_rows) == 10
    assert t.table_rows[0] == "David Bowie | musician | 69 | TRUE | 1947-01-08 | 2016-01-10"
    assert t.text.splitlines()[0] == t.table_header
    notes = [s.text for s in doc.sections if s.kind == "text" and s.sheet == "arts"]
    assert "Lots of people" in notes and "too!" in notes
    # notes above the table come before it
    idx = doc.sections.index(t)
    assert any(s.text == "Lots of people" for s in doc.sections[:idx])


def test_xls():
    doc = parse("datasets.xls")
    assert doc.page_count == 4
    by_sheet = {s.sheet: s for s in doc.sections if s.kind == "table"}
    assert set(by_sheet) == {"iris", "mtcars", "chickwts", "quakes"}
    iris = by_sheet["iris"]
    assert iris.table_header == "Sepal.Length | Sepal.Width | Petal.Length | Petal.Width | Species"
    assert len(iris.table_rows) == 150
    assert iris.table_rows[0] == "5.1 | 3.5 | 1.4 | 0.2 | setosa"
    assert len(by_sheet["quakes"].table_rows) == 1000


@pytest.mark.slow
def test_big_xlsx_is_fast(tmp_path):
    import openpyxl

    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("data")
    ws.append(["id", "name", "score"])
    for i in range(100_000):
        ws.append([i, f"name {i}", i / 4])
    p = tmp_path / "big.xlsx"
    wb.save(p)
    t = time.monotonic()
    doc = parse_file(p, filename="big.xlsx")
    assert time.monotonic() - t < 10
    (table,) = doc.sections
    assert table.kind == "table" and table.sheet == "data"
    assert table.table_header == "id | name | score"
    assert len(table.table_rows) == 100_000
    assert table.table_rows[-1] == "99999 | name 99999 | 24999.75"


@pytest.mark.slow  # 100,000 rows: about 2 s
def test_big_csv_is_fast(tmp_path):
    p = tmp_path / "big.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["城市", "人口", "面积"])
        for i in range(100_000):
            w.writerow([f"城市{i}", i * 10, f"{i}.5"])
    t = time.monotonic()
    doc = parse_file(p, filename="big.csv", mime_type="text/csv")
    assert time.monotonic() - t < 5
    (table,) = doc.sections
    assert table.table_header == "城市 | 人口 | 面积"
    assert len(table.table_rows) == 100_000 and table.table_rows[1] == "城市1 | 10 | 1.5"
    assert doc.language == "zh"


def test_sheet_row_limit(tmp_path):
    p = tmp_path / "rows.csv"
    p.write_text("a,b\n" + "".join(f"{i},{i}\n" for i in range(50)))
    doc = parse_file(p, filename="rows.csv", limits=ParseLimits(max_sheet_rows=11))
    assert len(doc.sections[0].table_rows) == 10
    assert any("more than 11 rows" in w for w in doc.warnings)


@pytest.mark.slow  # writes and inspects a zip bomb: about 1.5 s
def test_docx_zip_bomb_is_refused_without_decompressing(tmp_path):
    p = tmp_path / "bomb.docx"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        info = zipfile.ZipInfo("word/document.xml")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as f:
            chunk = bytes(8 << 20)
            for _ in range(66):  # 528 MB of zeros, > the 500 MB default limit
                f.write(chunk)
    assert p.stat().st_size < 2_000_000
    t = time.monotonic()
    with pytest.raises(ParseError, match="zip bomb"):
        parse_file(p, filename="bomb.docx")
    assert time.monotonic() - t < 1.0


def test_damaged_office_files(tmp_path):
    p = tmp_path / "bad.docx"
    p.write_bytes(os.urandom(5000))
    with pytest.raises(ParseError, match="not a valid DOCX"):
        parse_file(p, filename="bad.docx")
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("hello.txt", "not word")
    with pytest.raises(ParseError, match="not a valid DOCX"):
        parse_file(p, filename="bad.docx")
    q = tmp_path / "cut.xlsx"
    data = (FIX / "deaths.xlsx").read_bytes()
    q.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError, match="not a valid XLSX"):
        parse_file(q, filename="cut.xlsx")
    r = tmp_path / "old.doc"
    r.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600))
    with pytest.raises(ParseError, match="legacy Word"):
        parse_file(r, filename="old.doc")


# --------------------------------------------------------------------------- HTML / Markdown


def test_html_english():
    doc = parse("postgresql-html/postgresql-indexes-partial.html")
    assert doc.language == "en"
    assert doc.sections[0].kind == "title" and doc.sections[0].text == "11.8. Partial Indexes"
    s = find(doc, "A partial index is an index built over a subset of a table")
    assert s.heading_path == ("11.8. Partial Indexes",)
    assert any(x.kind == "code" and "CREATE INDEX" in x.text for x in doc.sections)
    body = texts(doc)
    # DocBook navigation header/footer tables are chrome
    assert "Prev" not in body.split() and "Next" not in body.split()


def test_html_chinese_chrome_removed():
    doc = parse("libreoffice-swriter-pagenumbers.html")
    assert doc.language == "zh"
    body = texts(doc)
    for chrome in (
        "LibreOffice 7.4 帮助",
        "模块",
        "搜索已选模块",
        "索引",
        "Help content debug info",
        "This page is:",
    ):
        assert chrome not in body, chrome
    assert doc.sections[0].kind == "title" and doc.sections[0].text == "页码"
    s = find(doc, "选择一种数字格式")
    assert s.kind == "list"
    assert s.heading_path == ("页码", "To Select the Page Number Format")


def test_huge_one_line_html_is_refused_fast(tmp_path):
    p = tmp_path / "huge.html"
    with open(p, "wb") as f:
        f.write(b"<html><body>")
        para = b"<p>" + b"word " * 200 + b"</p>"
        for _ in range(50 * 1024 * 1024 // len(para)):
            f.write(para)
        f.write(b"</body></html>")
    t = time.monotonic()
    with pytest.raises(ParseError, match="HTML page too large"):
        parse_file(p, filename="huge.html")
    assert time.monotonic() - t < 5


def test_big_one_line_html_under_the_limit_parses(tmp_path):
    p = tmp_path / "big.html"
    para = "<h2>Part {i}</h2><p>" + "lorem ipsum dolor " * 50 + "</p>"
    p.write_text("<html><body>" + "".join(para.format(i=i) for i in range(5000)) + "</body></html>")
    t = time.monotonic()
    doc = parse_file(p, filename="big.html")
    assert time.monotonic() - t < 10
    assert len(doc.sections) == 10_000
    assert doc.sections[-1].heading_path == ("Part 4999",)


def test_markdown():
    doc = parse("postgresql-queries-with.en.md")
    assert doc.sections[0].kind == "title"
    assert doc.sections[0].text.startswith("7.8.")
    s = find(doc, "The basic value of SELECT in WITH")
    assert s.heading_path[-1] == "7.8.1. SELECT in WITH" and len(s.heading_path) == 2
    assert any(x.kind == "code" and "WITH regional_sales AS" in x.text for x in doc.sections)
    assert "Prev" not in texts(doc).split()  # the raw-HTML navigation table is chrome


# --------------------------------------------------------------------------- text encodings


def test_text_encodings(tmp_path):
    zh = "数据库索引可以加快查询速度。全文检索支持中文分词。\n\n第二段落：向量检索。"
    p = tmp_path / "gb.txt"
    p.write_bytes(zh.encode("gb18030"))
    doc = parse_file(p, filename="gb.txt")
    assert doc.language == "zh" and "全文检索支持中文分词" in texts(doc)
    assert len(doc.sections) == 2
    fr = "Les index accélèrent les requêtes. Le système déjà très élégant, où l'on préfère ça."
    p.write_bytes(fr.encode("latin-1"))
    assert "accélèrent" in texts(parse_file(p, filename="fr.txt"))
    p.write_bytes("UTF-16 text with a BOM: 你好".encode("utf-16"))
    assert "你好" in texts(parse_file(p, filename="u16.txt"))


def test_random_bytes_as_text(tmp_path):
    import random

    rnd = random.Random(7)
    p = tmp_path / "noise.txt"
    p.write_bytes(bytes(rnd.randrange(256) for _ in range(20_000)))
    with pytest.raises(ParseError, match="binary|not readable"):
        parse_file(p, filename="noise.txt")
    # high bytes only (no NULs): decodes in some 8-bit codec, but it is not text
    p.write_bytes(bytes(rnd.randrange(128, 256) for _ in range(20_000)))
    with pytest.raises(ParseError, match="not readable|binary"):
        parse_file(p, filename="noise.txt")


def test_plain_text_structure(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("Title\n=====\n\nFirst paragraph\ncontinues here.\n\n- item one\n- item two\n")
    doc = parse_file(p, filename="notes.txt")
    kinds = [(s.kind, s.text) for s in doc.sections]
    assert kinds[0] == ("title", "Title")
    assert ("text", "First paragraph\ncontinues here.") in kinds
    assert ("list", "- item two") in kinds
    assert doc.sections[-1].heading_path == ("Title",)


# --------------------------------------------------------------------------- e-mail / EPUB


def test_eml_real():
    doc = parse("hard-ham-00017.eml")
    first = doc.sections[0]
    assert first.text.startswith("Subject: Your Daily Dilbert 07/10/2002")
    assert "From: Daily Dilbert" in first.text and "Date:" in first.text
    s = find(doc, "plain text subscription")
    assert s.heading_path == ("Your Daily Dilbert 07/10/2002",)
    doc2 = parse("easy-ham-00001.eml")
    assert doc2.sections[0].text.startswith("Subject: Re: New Sequences Window")


def test_eml_with_attachments(tmp_path):
    msg = EmailMessage()
    msg["Subject"] = "Quarterly numbers"
    msg["From"] = "alice@example.com"
    msg["To"] = "bob@example.com"
    msg["Date"] = "Mon, 1 Jul 2024 10:00:00 +0000"
    msg.set_content("Hi Bob,\n\nthe numbers are attached.\n")
    msg.add_alternative(
        "<html><body><p>Hi Bob, <b>numbers</b> attached.</p></body></html>", subtype="html"
    )
    msg.add_attachment(
        b"region,sales\nnorth,10\nsouth,20\n", maintype="text", subtype="csv", filename="sales.csv"
    )
    msg.add_attachment(
        (FIX / "postgresql-html/postgresql-indexes-partial.html").read_bytes(),
        maintype="text",
        subtype="html",
        filename="partial.html",
    )
    msg.add_attachment(
        b"\x00" * 100 + b"garbage",
        maintype="application",
        subtype="octet-stream",
        filename="blob.bin",
    )
    p = tmp_path / "m.eml"
    p.write_bytes(bytes(msg))
    doc = parse_file(p, filename="m.eml")
    assert doc.sections[0].text.splitlines()[0] == "Subject: Quarterly numbers"
    body = find(doc, "the numbers are attached")
    assert body.heading_path == ("Quarterly numbers",)
    table = next(s for s in doc.sections if s.kind == "table")
    assert table.heading_path[:2] == ("Quarterly numbers", "sales.csv")
    assert table.table_header == "region | sales" and table.table_rows == (
        "north | 10",
        "south | 20",
    )
    html = find(doc, "A partial index is an index built over a subset")
    assert html.heading_path == ("Quarterly numbers", "partial.html", "11.8. Partial Indexes")
    assert any("blob.bin" in w for w in doc.warnings)


def _epub(path: Path, prefix: str = "") -> None:
    container = (
        '<?xml version="1.0"?><container version="1.0" '
        'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
        f'<rootfile full-path="{prefix}OEBPS/content.opf" '
        'media-type="application/oebps-package+xml"/>'
        "</rootfiles></container>"
    )
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
        "<manifest>"
        '<item id="c1" href="ch1.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="c2" href="text/ch2.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="css" href="style.css" media-type="text/css"/>'
        '</manifest><spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>'
    )
    ch = (
        '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
        "<head><title>t</title></head><body><h1>{h1}</h1><p>{p}</p><h2>{h2}</h2><ul><li>{li}</li></ul>"
        "</body></html>"
    )
    with zipfile.ZipFile(path, "w") as z:
        if not prefix:
            z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr(prefix + "META-INF/container.xml", container)
        z.writestr(prefix + "OEBPS/content.opf", opf)
        z.writestr(
            prefix + "OEBPS/ch1.xhtml",
            ch.format(h1="第一章 简介", p="这是第一章的正文。", h2="背景", li="要点一"),
        )
        z.writestr(
            prefix + "OEBPS/text/ch2.xhtml",
            ch.format(h1="Chapter 2", p="Second chapter body.", h2="Details", li="point"),
        )
        z.writestr(prefix + "OEBPS/style.css", "p{}")


def test_epub(tmp_path):
    for prefix in ("", "book/"):
        p = tmp_path / "book.epub"
        _epub(p, prefix)
        doc = parse_file(p, filename="book.epub")
        titles = [(s.text, s.level) for s in doc.sections if s.kind == "title"]
        assert titles == [("第一章 简介", 1), ("背景", 2), ("Chapter 2", 1), ("Details", 2)]
        assert find(doc, "要点一").heading_path == ("第一章 简介", "背景")
        assert find(doc, "Second chapter body.").heading_path == ("Chapter 2",)
        assert doc.language == "zh"


# --------------------------------------------------------------------------- URLs


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        if self.path == "/page":
            body = b"<html><head><title>x</title></head>"
            body += b"<body><h1>Hello</h1><p>Fetched page.</p></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/page")
            self.end_headers()
        elif self.path == "/slow":
            time.sleep(2)
            self.send_response(200)
            self.end_headers()
        elif self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"x" * 65536)
        elif self.path == "/down":
            self.send_response(503)
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()


@pytest.fixture
def http_server(monkeypatch):
    monkeypatch.setenv("RAG_ALLOW_LOCAL_URLS", "1")
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_url(http_server, tmp_path):
    content, name, mime = fetch_url(http_server + "/redirect")
    assert mime == "text/html" and name == "page.html" and b"Fetched page." in content
    p = tmp_path / name
    p.write_bytes(content)
    doc = parse_file(p, filename=name, mime_type=mime)
    assert find(doc, "Fetched page.").heading_path == ("Hello",)
    with pytest.raises(ParseError, match="HTTP 404"):
        fetch_url(http_server + "/missing")
    with pytest.raises(TransientParseError, match="503"):
        fetch_url(http_server + "/down")
    with pytest.raises(TransientParseError, match="timed out"):
        fetch_url(http_server + "/slow", limits=ParseLimits(url_timeout=0.5))
    with pytest.raises(ParseError, match="too large"):
        fetch_url(http_server + "/big", limits=ParseLimits(url_max_bytes=1_000_000))


def test_fetch_url_refuses_bad_targets(monkeypatch):
    monkeypatch.delenv("RAG_ALLOW_LOCAL_URLS", raising=False)
    with pytest.raises(ParseError, match="http"):
        fetch_url("file:///etc/passwd")
    with pytest.raises(ParseError, match="local or reserved"):
        fetch_url("http://127.0.0.1:9/")
    with pytest.raises(ParseError, match="local or reserved"):
        fetch_url("http://169.254.169.254/latest/meta-data/")


def test_module_does_not_import_django():
    import subprocess
    import sys

    code = "import sys, ingestion.parsing; print('django' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    )
    assert out.stdout.strip() == "False"
