"""How a stored original is served back to the browser: decided from its bytes alone.

The file's name and the MIME type a remote server claimed are attacker-chosen (a URL such as
https://site/page?x=.pdf can answer text/html with a script), so neither decides anything
here. Only real PDFs and real raster images are shown inline, with their true type; everything
else is a download of an inert type. SVG is not an image here: it is XML that can run script.

Plain Python (no Django).
"""

from __future__ import annotations

import codecs
import unicodedata
from dataclasses import dataclass

# Enough for every magic number below and for a fair look at whether the file is text.
SNIFF_BYTES = 8192

PDF = "application/pdf"
OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Serving:
    content_type: str
    inline: bool
    # Content-Security-Policy of the response, or None. Browsers refuse to run their PDF
    # viewer in a sandboxed document, so real PDFs are the only thing served without one.
    csp: str | None


def _image_type(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        # Not final: the sniffed head may end in the middle of a multi-byte character.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def serving_for(head: bytes) -> Serving:
    """How to serve a file that starts with `head` (its first SNIFF_BYTES bytes)."""
    # Same rule as ingestion (parsing._sniff_binary): a PDF may carry a little junk before
    # its header, and every file the pipeline parsed as a PDF must open at #page=N. Served as
    # application/pdf with nosniff, a polyglot can only ever reach the PDF viewer.
    if b"%PDF-" in head[:1024]:
        return Serving(content_type=PDF, inline=True, csp=None)
    image = _image_type(head)
    if image is not None:
        return Serving(content_type=image, inline=True, csp="sandbox")
    return Serving(
        content_type=TEXT if _is_text(head) else OCTET_STREAM, inline=False, csp="sandbox"
    )


def safe_filename(name: str, *, default: str = "document") -> str:
    """A download name without control characters or path separators, at most 200 chars."""
    cleaned = "".join(
        "_" if ch in "/\\" else ch for ch in name if not unicodedata.category(ch).startswith("C")
    ).strip(" .")
    return cleaned[-200:] or default
