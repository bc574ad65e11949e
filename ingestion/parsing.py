"""Document parsing: file (or URL) -> ParsedDocument of typed sections.

Plain Python (no Django). Entry points: `parse_file`, `fetch_url` (lives in fetching.py),
`detect_language`.

Type detection trusts the content over the name: the magic bytes decide (PDF, PNG, JPEG, GIF,
TIFF, WebP, BMP, ZIP containers -> DOCX/PPTX/XLSX/EPUB by their members, OLE2 -> XLS). A file
whose name or declared MIME type disagrees with its content is parsed as what it really is and
a warning says so (e.g. a PNG renamed to .pdf is OCR'd as a PNG image). Text formats (HTML,
Markdown, CSV, e-mail, plain text) are told apart by name/MIME type and then by content.

Formats: PDF (pypdfium2 text layer; pages without a usable text layer are OCR'd with
tesseract), images (OCR), DOCX (python-docx), PPTX (python-pptx), XLSX (openpyxl, streaming),
XLS (xlrd), CSV/TSV, HTML (lxml, page chrome removed), Markdown, plain text (any encoding),
EML (with attachments), EPUB.

Failures: ParseError (permanent, message fit for a user) or TransientParseError (retry).
`progress(fraction)` is called with 0..1 during long parses (per PDF page, sheet, slide,
chapter); an exception raised by it propagates (it can be used to cancel).
"""

from __future__ import annotations

import os

os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")

import re  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from .fetching import fetch_url  # noqa: E402  (re-exported: callers import it from here)
from .parsers.base import (  # noqa: E402
    Context,
    ParsedDocument,
    ParseError,
    ParseLimits,
    Section,
    TransientParseError,
    detect_language,
    garbage_score,
)

__all__ = [
    "ParseError",
    "TransientParseError",
    "Section",
    "ParsedDocument",
    "ParseLimits",
    "parse_file",
    "fetch_url",
    "detect_language",
    "detect_type",
    "garbage_score",
    "SUPPORTED_EXTENSIONS",
]

# file type -> extensions it is known by
SUPPORTED_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "pdf": (".pdf",),
    "docx": (".docx", ".docm", ".dotx"),
    "pptx": (".pptx", ".pptm", ".ppsx"),
    "xlsx": (".xlsx", ".xlsm"),
    "xls": (".xls",),
    "csv": (".csv", ".tsv", ".tab"),
    "html": (".html", ".htm", ".xhtml", ".shtml"),
    "md": (".md", ".markdown", ".mdown", ".mkd"),
    "txt": (
        ".txt",
        ".text",
        ".log",
        ".rst",
        ".ini",
        ".cfg",
        ".conf",
        ".json",
        ".yaml",
        ".yml",
        ".xml",
    ),
    "eml": (".eml", ".mht", ".mhtml"),
    "epub": (".epub",),
    "odt": (".odt",),
    "rtf": (".rtf",),
    "png": (".png",),
    "jpeg": (".jpg", ".jpeg", ".jpe"),
    "gif": (".gif",),
    "tiff": (".tif", ".tiff"),
    "webp": (".webp",),
    "bmp": (".bmp",),
}
_EXT_TO_TYPE = {ext: t for t, exts in SUPPORTED_EXTENSIONS.items() for ext in exts}
_MIME_TO_TYPE = {
    "application/pdf": "pdf",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/csv": "csv",
    "text/tab-separated-values": "csv",
    "message/rfc822": "eml",
    "text/plain": "txt",
    "application/epub+zip": "epub",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.ms-excel": "xls",
}
_TYPE_LABEL = {
    "pdf": "a PDF",
    "docx": "a DOCX document",
    "pptx": "a PPTX presentation",
    "xlsx": "an XLSX workbook",
    "xls": "an XLS workbook",
    "csv": "a CSV file",
    "html": "an HTML page",
    "md": "a Markdown file",
    "txt": "a text file",
    "eml": "an e-mail",
    "epub": "an EPUB book",
    "png": "a PNG image",
    "jpeg": "a JPEG image",
    "gif": "a GIF image",
    "tiff": "a TIFF image",
    "webp": "a WebP image",
    "bmp": "a BMP image",
}
_BINARY_TYPES = {
    "pdf",
    "docx",
    "pptx",
    "xlsx",
    "xls",
    "epub",
    "png",
    "jpeg",
    "gif",
    "tiff",
    "webp",
    "bmp",
}
_IMAGE_TYPES = {"png", "jpeg", "gif", "tiff", "webp", "bmp"}
_EMAIL_HEADER_RE = re.compile(
    rb"^(received|from|to|subject|date|message-id|mime-version|return-path|delivered-to|x-[a-z-]+|content-type)\s*:",
    re.I | re.M,
)


def _sniff_binary(path: Path, head: bytes) -> str | None:
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM") and len(head) > 26 and head[14] in (12, 40, 56, 64, 108, 124):
        return "bmp"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _sniff_zip(path)
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "ole"
    return None


def _sniff_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "mimetype" in names:
                info = zf.getinfo("mimetype")
                if info.file_size < 100 and zf.read("mimetype").strip() == b"application/epub+zip":
                    return "epub"
    except (zipfile.BadZipFile, OSError, ValueError):
        return "zip-damaged"
    if "word/document.xml" in names:
        return "docx"
    if "ppt/presentation.xml" in names:
        return "pptx"
    if "xl/workbook.xml" in names:
        return "xlsx"
    if any(n.endswith("META-INF/container.xml") for n in names) and any(
        n.lower().endswith(".opf") for n in names
    ):
        return "epub"
    if "[Content_Types].xml" in names:
        return "ooxml-other"
    if "content.xml" in names and "mimetype" in names:
        return "odf"
    return "zip"


def detect_type(path: str | Path, filename: str = "", mime_type: str | None = None) -> str:
    """The file type parse_file will use ("pdf", "docx", "html", "png", ...)."""
    return _detect(Path(path), filename or Path(path).name, mime_type)[0]


def _detect(path: Path, filename: str, mime_type: str | None) -> tuple[str, str | None]:
    """(type, warning)."""
    with open(path, "rb") as f:
        head = f.read(8192)
    ext = Path(filename).suffix.lower()
    claimed = _EXT_TO_TYPE.get(ext)
    mime = (mime_type or "").split(";")[0].strip().lower()
    if claimed is None or claimed == "txt":
        claimed = _MIME_TO_TYPE.get(mime, claimed)
    sniffed = _sniff_binary(path, head)
    if sniffed == "zip-damaged":
        what = {"docx": "DOCX", "pptx": "PPTX", "xlsx": "XLSX", "epub": "EPUB"}.get(
            claimed or "", "ZIP"
        )
        raise ParseError(f"not a valid {what} archive (damaged ZIP container)")
    if sniffed == "ole":
        if claimed == "xls" or ext == ".xls":
            return "xls", None
        if ext in (".doc", ".dot"):
            raise ParseError("legacy Word .doc files are not supported; save it as .docx")
        if ext in (".ppt", ".pps"):
            raise ParseError("legacy PowerPoint .ppt files are not supported; save it as .pptx")
        if ext == ".msg":
            raise ParseError("Outlook .msg files are not supported; save the message as .eml")
        return "xls", None  # xlrd decides; it fails cleanly on other OLE files
    if sniffed in ("zip", "ooxml-other", "odf"):
        if claimed in ("docx", "pptx", "xlsx", "epub"):
            raise ParseError(f"not a valid {claimed.upper()} archive (required parts are missing)")
        if sniffed == "odf" and claimed == "odt":
            return "odt", None
        if sniffed == "odf":
            raise ParseError(
                "OpenDocument spreadsheets and presentations (.ods/.odp) are not supported; "
                "save them as .xlsx/.pptx"
            )
        raise ParseError("ZIP archives are not supported; upload the documents inside it")
    if sniffed:
        warning = None
        if claimed and claimed != sniffed:
            warning = (
                f"the file name says {_TYPE_LABEL.get(claimed, claimed)} but the content is "
                f"{_TYPE_LABEL.get(sniffed, sniffed)}; "
                f"parsed as {_TYPE_LABEL.get(sniffed, sniffed)}"
            )
        return sniffed, warning
    # not a known binary signature
    if claimed in _BINARY_TYPES:
        raise ParseError(_not_a(claimed, head))
    if (
        b"\x00" in head
        and not head.startswith((b"\xff\xfe", b"\xfe\xff"))
        and head.count(b"\x00") > 16
    ):
        raise ParseError("unsupported file type (binary data)")
    if head.lstrip().startswith(b"{\\rtf"):
        return "rtf", None
    if claimed in ("html", "md", "csv", "eml"):
        return claimed, None
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith((b"<!doctype html", b"<html")) or (
        start.startswith((b"<?xml", b"<!--")) and b"<html" in head.lower()
    ):
        return "html", None
    mail = head.lstrip()
    if mail.startswith(b"From "):  # mbox "From_" line
        mail = mail.split(b"\n", 1)[-1]
    if len(_EMAIL_HEADER_RE.findall(mail[:4096])) >= 3 and _EMAIL_HEADER_RE.match(mail):
        return "eml", None
    return "txt", None


def _not_a(claimed: str, head: bytes) -> str:
    what = {
        "pdf": "PDF",
        "docx": "DOCX document",
        "pptx": "PPTX presentation",
        "xlsx": "XLSX workbook",
        "xls": "XLS workbook",
        "epub": "EPUB book",
    }.get(claimed)
    if claimed == "pdf":
        return "PDF is damaged or not a valid PDF"
    if what:
        return f"not a valid {what} (the content is not in that format)"
    return f"not a valid {claimed.upper()} image"


def _parse_path(
    path: Path, filename: str, mime_type: str | None, ctx: Context
) -> tuple[list[Section], int | None]:
    size = path.stat().st_size
    if size == 0:
        raise ParseError("file is empty")
    kind, warning = _detect(path, filename, mime_type)
    if warning:
        ctx.warn(warning)
    if kind == "pdf":
        from .parsers.pdf import parse_pdf

        return parse_pdf(path, ctx)
    if kind in _IMAGE_TYPES:
        from .parsers.pdf import parse_image

        return parse_image(path, ctx, kind.upper()), 1
    if kind == "docx":
        from .parsers.office import parse_docx

        return parse_docx(path, ctx), None
    if kind == "pptx":
        from .parsers.office import parse_pptx

        return parse_pptx(path, ctx)
    if kind == "xlsx":
        from .parsers.sheets import parse_xlsx

        return parse_xlsx(path, ctx)
    if kind == "xls":
        from .parsers.sheets import parse_xls

        return parse_xls(path, ctx)
    if kind == "epub":
        from .parsers.containers import parse_epub

        return parse_epub(path, ctx), None
    if kind in ("odt", "rtf"):
        from .parsers.unstructured_formats import parse_with_unstructured

        return parse_with_unstructured(path, kind, ctx), None
    # text formats: read once, bounded
    if size > 4 * ctx.limits.max_text_chars:
        label = {
            "html": "HTML page",
            "csv": "CSV file",
            "eml": "e-mail",
            "md": "Markdown file",
        }.get(kind, "text file")
        raise ParseError(
            f"{label} too large ({size / 2**20:.0f} MB; the limit is "
            f"{ctx.limits.max_text_chars / 1e6:.0f} million characters)"
        )
    data = path.read_bytes()
    if kind == "html":
        from .parsers.html import parse_html

        return parse_html(data, ctx), None
    if kind == "md":
        from .parsers.text import parse_markdown

        return parse_markdown(data, ctx), None
    if kind == "csv":
        from .parsers.sheets import parse_csv

        return parse_csv(data, ctx, filename)
    if kind == "eml":
        from .parsers.containers import parse_eml

        return parse_eml(data, ctx, _parse_path), None
    from .parsers.text import parse_txt

    return parse_txt(data, ctx), None


def parse_file(
    path: str | Path,
    *,
    filename: str,
    mime_type: str | None = None,
    limits: ParseLimits | None = None,
    progress: Callable[[float], None] | None = None,
) -> ParsedDocument:
    """Parse one file into sections (see the module docstring for formats and rules)."""
    path = Path(path)
    ctx = Context(limits or ParseLimits(), progress)
    if not path.is_file():
        raise ParseError("file not found")
    ctx.report(0.0)
    try:
        sections, page_count = _parse_path(path, filename or path.name, mime_type, ctx)
    except (ParseError, TransientParseError):
        raise
    except MemoryError as exc:
        raise ParseError("document is too large to parse") from exc
    except RecursionError as exc:
        raise ParseError("document is too deeply nested to parse") from exc
    if not sections:
        raise ParseError("no text found in the document")
    ctx.report(1.0)
    sample = "\n".join(s.text for s in sections[:2000])
    return ParsedDocument(
        sections=sections,
        page_count=page_count,
        language=detect_language(sample),
        warnings=tuple(ctx.warnings),
    )
