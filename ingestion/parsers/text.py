"""Plain text and Markdown; byte decoding shared by all text-based formats."""

from __future__ import annotations

import codecs
import re

from .base import (
    Context,
    ParseError,
    Section,
    SectionBuilder,
    clean_inline,
    garbage_score,
)

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# chardet names -> the codec to really use (supersets decode more of what is out there)
_SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ascii": "utf-8",
    "iso-8859-1": "cp1252",
    "euc-kr": "cp949",
    "big5": "big5hkscs",
    "shift_jis": "cp932",
}


def _norm_codec(name: str | None) -> str | None:
    if not name:
        return None
    name = name.strip().strip("\"'").lower()
    try:
        name = codecs.lookup(name).name
    except LookupError:
        return None
    return _SUPERSETS.get(name, name)


def _try(data: bytes, enc: str) -> str | None:
    try:
        return data.decode(enc)
    except (UnicodeDecodeError, LookupError):
        return None


def decode_bytes(
    data: bytes, declared: str | None = None, *, what: str = "text"
) -> tuple[str, str]:
    """Decode bytes of unknown encoding: BOM, declared charset, UTF-8, chardet on a sample,
    GB18030, then cp1252/latin-1 with replacement. Returns (text, encoding used)."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data.decode(enc, errors="replace"), enc
    dec = _norm_codec(declared)
    if dec and dec != "utf-8":
        text = _try(data, dec)
        if text is not None:
            return text, dec
    text = _try(data, "utf-8")
    if text is not None:
        return text, "utf-8"
    # UTF-8 with a few broken bytes (e.g. a truncated download) is still UTF-8
    head = data[:200_000]
    probe = head.decode("utf-8", errors="replace")
    if probe.count("\ufffd") <= max(2, len(probe) // 1000) and _looks_utf8(head):
        return data.decode("utf-8", errors="replace"), "utf-8"
    guess = None
    try:
        import chardet

        res = chardet.detect(data[:65536])
        if res and (res.get("confidence") or 0) >= 0.3:
            guess = _norm_codec(res.get("encoding"))
    except Exception:  # chardet is a nicety
        guess = None
    candidates = [c for c in (guess, "gb18030", "big5hkscs", "cp932") if c]
    best: tuple[float, str, str] | None = None
    for enc in dict.fromkeys(candidates):
        text = _try(data, enc)
        if text is None:
            continue
        score = garbage_score(text[:20000])
        if best is None or score < best[0]:
            best = (score, text, enc)
        if score < 0.05:
            break
    if best is not None and best[0] < 0.2:
        return best[1], best[2]
    enc = guess or "cp1252"
    return data.decode(enc, errors="replace"), enc


def _looks_utf8(data: bytes) -> bool:
    # enough valid multi-byte sequences that UTF-8 is the right family
    return len(re.findall(rb"[\xc2-\xf4][\x80-\xbf]+", data)) >= 5


def check_text_size(text_or_len: str | int, ctx: Context, what: str) -> None:
    n = text_or_len if isinstance(text_or_len, int) else len(text_or_len)
    if n > ctx.limits.max_text_chars:
        raise ParseError(
            f"{what} too large ({n / 1e6:.1f} million characters; the limit is "
            f"{ctx.limits.max_text_chars / 1e6:.0f} million)"
        )


def read_text_file(
    data: bytes, ctx: Context, what: str = "text file", declared: str | None = None
) -> str:
    # characters <= bytes for every encoding except UTF-16/32 (at most 4 bytes per char)
    if len(data) > 4 * ctx.limits.max_text_chars:
        check_text_size(len(data) // 4, ctx, what)
    if b"\x00" in data[:8192] and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        if data[:8192].count(b"\x00") > 16:
            raise ParseError(f"{what} looks like binary data, not text")
    text, _enc = decode_bytes(data, declared, what=what)
    check_text_size(text, ctx, what)
    sample = text[:50_000]
    if sample.strip() and garbage_score(sample) > 0.4:
        raise ParseError(f"{what} is not readable text (unknown character encoding or binary data)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


_BULLET_RE = re.compile(r"^\s*(?:[-*+•·▪◦‣–]|\(?\d{1,3}[.)]|\(?[a-zA-Z][.)])\s+")


def split_paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def parse_txt(data: bytes, ctx: Context) -> list[Section]:
    text = read_text_file(data, ctx)
    b = SectionBuilder()
    add_plain_text(b, text)
    return b.sections


def add_plain_text(b: SectionBuilder, text: str, **kw: object) -> None:
    """Paragraphs split on blank lines; bullet lines become list items; underlined
    (=====/-----) lines become titles."""
    for para in split_paragraphs(text):
        lines = [ln for ln in para.split("\n") if ln.strip()]
        if (
            len(lines) == 2
            and re.fullmatch(r"\s*(=+|-+)\s*", lines[1])
            and len(lines[0].strip()) < 200
        ):
            b.title(lines[0], 1 if "=" in lines[1] else 2, **kw)
            continue
        if (
            len(lines) > 1
            and all(_BULLET_RE.match(ln) or ln.startswith((" ", "\t")) for ln in lines)
            and _BULLET_RE.match(lines[0])
        ):
            item: list[str] = []
            for ln in lines:
                if _BULLET_RE.match(ln) and item:
                    b.add(clean_inline(" ".join(item)), "list", **kw)
                    item = []
                item.append(ln.strip())
            if item:
                b.add(clean_inline(" ".join(item)), "list", **kw)
            continue
        if len(lines) == 1 and _BULLET_RE.match(lines[0]):
            b.add(lines[0].strip(), "list", **kw)
            continue
        b.add(para, "text", **kw)


def parse_markdown(data: bytes, ctx: Context) -> list[Section]:
    import markdown

    from .html import html_to_sections

    text = read_text_file(data, ctx, "Markdown file")
    html = markdown.markdown(
        text, extensions=["tables", "fenced_code", "sane_lists"], output_format="html"
    )
    return html_to_sections(html, ctx, strip_chrome=True)
