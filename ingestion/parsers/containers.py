"""E-mail (.eml, attachments parsed recursively) and EPUB (spine of XHTML chapters)."""

from __future__ import annotations

import email
import email.policy
import posixpath
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .base import (
    Context,
    ParseError,
    Section,
    SectionBuilder,
    TransientParseError,
    clean_inline,
    open_zip_checked,
)
from .html import decode_html, html_to_sections
from .text import add_plain_text, decode_bytes

MAX_ATTACHMENT_DEPTH = 3

# (path, filename, mime_type, ctx) -> (sections, page_count)
ParseFn = Callable[[Path, str, str | None, Context], tuple[list[Section], int | None]]


def _part_text(part) -> str:
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, AssertionError, KeyError):
        pass
    payload = part.get_payload(decode=True) or b""
    return decode_bytes(payload, part.get_content_charset())[0]


def parse_eml(data: bytes, ctx: Context, parse_fn: ParseFn) -> list[Section]:
    try:
        msg = email.message_from_bytes(data, policy=email.policy.default)
    except Exception as exc:
        raise ParseError("e-mail message could not be read") from exc
    b = SectionBuilder()

    def header(name: str) -> str:
        try:
            v = msg.get(name)
        except Exception:  # malformed header
            v = msg.get_all(name, [""])[0] if hasattr(msg, "get_all") else ""
        return clean_inline(str(v)) if v else ""

    subject = header("Subject")
    head = [f"{k}: {header(k)}" for k in ("Subject", "From", "To", "Cc", "Date") if header(k)]
    if head:
        b.add("\n".join(head), "text")
    base = (subject,) if subject else ()
    body_b = SectionBuilder(base)
    body = None
    try:
        body = msg.get_body(preferencelist=("plain", "html"))
    except Exception:
        body = None
    if body is None and not msg.is_multipart():
        body = msg
    if body is not None:
        ctype = body.get_content_type()
        text = _part_text(body)
        if ctype == "text/html":
            html_to_sections(text, ctx, strip_chrome=True, builder=body_b, fallback_title=False)
        else:
            add_plain_text(body_b, text)
    sections = b.sections + body_b.sections
    try:
        attachments = list(msg.iter_attachments()) if msg.is_multipart() else []
    except Exception:
        attachments = []
    for k, part in enumerate(attachments, 1):
        name = part.get_filename() or f"attachment-{k}"
        name = clean_inline(name).replace("/", "_").replace("\\", "_") or f"attachment-{k}"
        ctype = part.get_content_type()
        if part.get_content_maintype() == "multipart":
            continue
        if ctype == "message/rfc822":
            inner = part.get_payload()
            payload = (inner[0] if isinstance(inner, list) else inner).as_bytes() if inner else b""
            if not name.lower().endswith(".eml"):
                name += ".eml"
        else:
            payload = part.get_payload(decode=True) or b""
        if not payload:
            continue
        if part.get_content_maintype() == "image" and len(payload) < 10_000:
            continue  # logos, signatures
        if ctx.depth >= MAX_ATTACHMENT_DEPTH:
            ctx.warn(f"attachment {name} skipped: attachments nested too deeply")
            continue
        sub = Context(ctx.limits, None, [], ctx.depth + 1, ctx.ocr_clock)
        with tempfile.TemporaryDirectory(prefix="ragparse-") as tmp:
            p = Path(tmp) / "attachment"
            p.write_bytes(payload)
            try:
                sub_sections, _ = parse_fn(p, name, ctype, sub)
            except ParseError as exc:
                ctx.warn(f"attachment {name} skipped: {exc}")
                continue
            except TransientParseError:
                raise
        prefix = base + (name,)
        for s in sub_sections:
            sections.append(replace(s, heading_path=prefix + s.heading_path))
        for w in sub.warnings:
            ctx.warn(f"attachment {name}: {w}")
    return sections


def parse_epub(path: Path, ctx: Context) -> list[Section]:
    from lxml import etree

    zf = open_zip_checked(path, ctx.limits, "EPUB")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, recover=True)
    try:
        names = zf.namelist()
        # the standard place is the root; some tools put everything under one folder
        cands = sorted((n for n in names if n.endswith("META-INF/container.xml")), key=len)
        rootfile = None
        if cands:
            prefix = cands[0][: -len("META-INF/container.xml")]
            container = etree.fromstring(zf.read(cands[0]), parser)
            if container is not None:
                rootfile = next(
                    (
                        el.get("full-path")
                        for el in container.iter()
                        if str(el.tag).endswith("rootfile")
                    ),
                    None,
                )
                if rootfile and rootfile not in names and prefix + rootfile in names:
                    rootfile = prefix + rootfile
        if not rootfile or rootfile not in names:
            opfs = sorted((n for n in names if n.lower().endswith(".opf")), key=len)
            rootfile = opfs[0] if opfs else None
        if not rootfile:
            raise ParseError("not a valid EPUB archive (no package document)")
        try:
            opf = etree.fromstring(zf.read(rootfile), parser)
        except KeyError as exc:
            raise ParseError("not a valid EPUB archive (package document is missing)") from exc
        if opf is None:
            raise ParseError("not a valid EPUB archive (package document is damaged)")
        opf_dir = posixpath.dirname(rootfile)
        manifest: dict[str, tuple[str, str]] = {}
        spine: list[str] = []
        for el in opf.iter():
            tag = str(el.tag).rsplit("}", 1)[-1]
            if tag == "item":
                manifest[el.get("id", "")] = (el.get("href", ""), el.get("media-type", ""))
            elif tag == "itemref":
                spine.append(el.get("idref", ""))
        docs = []
        for idref in spine:
            href, mtype = manifest.get(idref, ("", ""))
            if href and ("html" in mtype or href.lower().endswith((".xhtml", ".html", ".htm"))):
                from urllib.parse import unquote

                docs.append(
                    posixpath.normpath(posixpath.join(opf_dir, unquote(href.split("#")[0])))
                )
        if not docs:
            raise ParseError("EPUB has no readable chapters")
        b = SectionBuilder()
        for k, name in enumerate(docs, 1):
            try:
                data = zf.read(name)
            except KeyError:
                ctx.warn(f"EPUB chapter {name} is missing")
                continue
            b.reset()
            html_to_sections(
                decode_html(data, ctx, "EPUB chapter"), ctx, builder=b, fallback_title=False
            )
            ctx.report(k / len(docs))
        return b.sections
    finally:
        zf.close()
