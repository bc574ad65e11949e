"""HTML (also used for Markdown, EPUB chapters and HTML e-mail bodies).

lxml parses the page; page chrome (nav, header, footer, aside, menus, breadcrumbs, "skip to
content" links, scripts, hidden blocks, DocBook-style navigation tables ...) is removed; then a
walker turns headings, paragraphs, list items, <pre> blocks and tables into sections while
keeping the heading path.
"""

from __future__ import annotations

import re

from .base import Context, ParseError, Section, SectionBuilder, clean_inline, looks_typed
from .text import check_text_size, decode_bytes

HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
DROP_TAGS = {
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "math",
    "iframe",
    "object",
    "embed",
    "canvas",
    "button",
    "input",
    "select",
    "textarea",
    "option",
    "head",
    "link",
    "meta",
    "nav",
    "aside",
    "footer",
    "dialog",
    "map",
    "audio",
    "video",
    "source",
    "track",
}
BLOCK_TAGS = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "body",
    "html",
    "blockquote",
    "figure",
    "figcaption",
    "address",
    "center",
    "fieldset",
    "form",
    "details",
    "summary",
    "caption",
    "header",
    "hgroup",
    "dd",
    "dt",
    "dl",
    "ul",
    "ol",
    "menu",
    "li",
    "table",
    "pre",
    "hr",
    "tr",
    "td",
    "th",
    "thead",
    "tbody",
    "tfoot",
    "legend",
    "frameset",
    "frame",
    "noframes",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
}
CHROME_ROLES = {
    "navigation",
    "banner",
    "contentinfo",
    "complementary",
    "search",
    "menubar",
    "menu",
    "toolbar",
    "tablist",
}
# class / id tokens that mark page chrome (checked on container tags only)
CHROME_TOKEN_RE = re.compile(
    r"^(?:.*[-_])?(?:nav|navbar|navigation|navheader|navfooter|navbox|navlinks|menu|menubar|"
    r"mainmenu|breadcrumbs?|sidebar|sidenav|side-nav|footer|header|site-header|masthead|"
    r"topbar|toolbar|skiplinks?|skip-link|skip-to-content|cookies?|cookie-banner|"
    r"consent|social|share|sharing|pagination|pager|related\w*|advert\w*|ads)(?:[-_].*)?$",
    re.I,
)
CHROME_SUMMARY_RE = re.compile(r"navigation|breadcrumb|menu|导航", re.I)
CONTAINER_TAGS = {
    "div",
    "section",
    "ul",
    "ol",
    "table",
    "header",
    "nav",
    "aside",
    "footer",
    "p",
    "span",
    "td",
}
SKIP_LINK_RE = re.compile(
    r"^\s*(skip|jump)\s+(to|navigation)|^\s*跳(到|转到|至)(主要)?(内容|正文)"
    r"|^\s*(back to top|返回顶部)\s*$",
    re.I,
)
_META_CHARSET_RE = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)|<\?xml[^>]+encoding\s*=\s*["']([a-zA-Z0-9_.:-]+)""",
    re.I,
)
_XML_DECL_RE = re.compile(r"^\s*<\?xml[^>]*\?>", re.I)


def _tag(el) -> str:
    t = el.tag
    if not isinstance(t, str):
        return ""
    return t.rsplit("}", 1)[-1].lower()


def decode_html(data: bytes, ctx: Context, what: str = "HTML page") -> str:
    if len(data) > 4 * ctx.limits.max_text_chars:
        check_text_size(len(data) // 4, ctx, what)
    m = _META_CHARSET_RE.search(data[:4096])
    declared = None
    if m:
        declared = (m.group(1) or m.group(2)).decode("ascii", "ignore")
    text, _ = decode_bytes(data, declared, what=what)
    check_text_size(text, ctx, what)
    return text


def parse_html(data: bytes, ctx: Context) -> list[Section]:
    return html_to_sections(decode_html(data, ctx), ctx, strip_chrome=True)


def html_to_sections(
    html: str,
    ctx: Context,
    *,
    strip_chrome: bool = True,
    builder: SectionBuilder | None = None,
    fallback_title: bool = True,
) -> list[Section]:
    import lxml.html
    from lxml import etree

    check_text_size(html, ctx, "HTML page")
    html = _XML_DECL_RE.sub("", html, count=1)
    if not html.strip():
        return []
    try:
        root = lxml.html.document_fromstring(html)
    except (etree.ParserError, ValueError) as exc:
        raise ParseError("HTML page could not be parsed") from exc
    title_el = root.find(".//title")
    page_title = clean_inline(title_el.text_content()) if title_el is not None else ""
    body = root.find(".//body")
    if body is None:
        body = root
    if strip_chrome:
        _strip_chrome(body)
    else:
        for el in list(body.iter()):
            if (
                _tag(el) in ("script", "style", "noscript", "template", "head")
                and el.getparent() is not None
            ):
                el.drop_tree()
    content = _main_content(body)
    levels = sorted({HEADINGS[_tag(h)] for h in content.iter() if _tag(h) in HEADINGS})
    b = builder or SectionBuilder()
    start = len(b.sections)
    if not levels and page_title and fallback_title:
        b.title(page_title, 1)
    w = _Walker(b, min(levels) - 1 if levels else 0)
    w.walk(content)
    w.flush()
    return b.sections[start:] if builder is not None else b.sections


def _strip_chrome(body) -> None:
    total = len(body.text_content())
    drop = []
    for el in body.iter():
        tag = _tag(el)
        if not tag:
            if el.getparent() is not None and not isinstance(el.tag, str):
                drop.append(el)  # comments, processing instructions
            continue
        if tag in DROP_TAGS:
            if tag in ("footer", "nav", "aside") and _is_main_bulk(el, total):
                continue
            drop.append(el)
            continue
        attrs = el.attrib
        hidden = (
            "hidden" in attrs
            or attrs.get("aria-hidden", "").lower() == "true"
            or re.search(
                r"display\s*:\s*none|visibility\s*:\s*hidden", attrs.get("style", ""), re.I
            )
        )
        if hidden:
            if tag in BLOCK_TAGS:
                drop.append(el)
            else:  # inline alternatives (e.g. Mac / PC shortcuts): keep, but apart
                el.tail = " " + (el.tail or "")
            continue
        if tag == "header":
            if not _has_h1(el):
                drop.append(el)
            continue
        role = attrs.get("role", "").lower()
        if role in CHROME_ROLES and not _has_h1(el) and not _is_main_bulk(el, total):
            drop.append(el)
            continue
        if tag == "a":
            href = attrs.get("href", "")
            if href.startswith("#") and SKIP_LINK_RE.search(el.text_content() or ""):
                drop.append(el)
            continue
        if tag in CONTAINER_TAGS:
            label = " ".join(attrs.get(k, "") for k in ("summary", "data-summary", "aria-label"))
            if label and CHROME_SUMMARY_RE.search(label) and not _is_main_bulk(el, total):
                drop.append(el)
                continue
            if tag in ("span", "p", "td"):
                continue
            tokens = (attrs.get("class", "") + " " + attrs.get("id", "")).split()
            if any(CHROME_TOKEN_RE.match(t) for t in tokens):
                if not _has_h1(el) and not _is_main_bulk(el, total):
                    drop.append(el)
    for el in drop:
        if el.getparent() is not None and _attached(el, body):
            el.drop_tree()


def _attached(el, body) -> bool:
    p = el.getparent()
    while p is not None:
        if p is body:
            return True
        p = p.getparent()
    return el is body


def _has_h1(el) -> bool:
    return any(_tag(x) == "h1" for x in el.iter())


def _is_main_bulk(el, total: int) -> bool:
    return total > 500 and len(el.text_content()) > 0.6 * total


def _main_content(body):
    mains = [el for el in body.iter() if _tag(el) == "main" or el.attrib.get("role") == "main"]
    if len(mains) == 1:
        return mains[0]
    total = len(body.text_content()) or 1
    arts = [el for el in body.iter() if _tag(el) == "article"]
    if len(arts) == 1 and len(arts[0].text_content()) > 0.3 * total:
        return arts[0]
    return body


class _Walker:
    def __init__(self, b: SectionBuilder, level_offset: int) -> None:
        self.b = b
        self.level_offset = level_offset
        self.buf: list[str] = []
        self.li_depth = 0

    def flush(self) -> None:
        if not self.buf:
            return
        text = clean_inline("".join(self.buf))
        self.buf = []
        if text:
            self.b.add(text, "list" if self.li_depth else "text")

    def walk(self, el) -> None:
        if el.text:
            self.buf.append(el.text)
        for child in el:
            tag = _tag(child)
            if not tag:
                pass
            elif tag in HEADINGS:
                self.flush()
                self.b.title(child.text_content(), HEADINGS[tag] - self.level_offset)
            elif tag == "pre":
                self.flush()
                self.b.add(child.text_content(), "code")
            elif tag == "table":
                self.flush()
                self.table(child)
            elif tag in ("li", "dt", "dd"):
                self.flush()
                self.li_depth += 1
                self.walk(child)
                self.flush()
                self.li_depth -= 1
            elif tag == "br":
                self.buf.append(" ")
            elif tag in ("img",):
                pass
            elif tag in BLOCK_TAGS:
                self.flush()
                self.walk(child)
                self.flush()
            else:
                self.walk(child)
            if child.tail:
                self.buf.append(child.tail)

    def table(self, table) -> None:
        rows = [r for r in table.iter("tr") if _closest_table(r) is table]
        layout = any(
            _tag(x) in HEADINGS or _tag(x) in ("pre", "table", "ul", "ol")
            for x in table.iter()
            if x is not table
        )
        if layout or not rows:
            self.walk(table)
            self.flush()
            return
        cells_rows: list[list[str]] = []
        header_first = False
        for _i, tr in enumerate(rows):
            cells = [c for c in tr if _tag(c) in ("td", "th")]
            texts = [clean_inline(c.text_content()) for c in cells]
            if not any(texts):
                continue
            if not cells_rows:
                in_head = _tag(tr.getparent()) == "thead" if tr.getparent() is not None else False
                all_th = all(_tag(c) == "th" for c in cells)
                header_first = (
                    in_head or all_th or (len(rows) > 1 and not any(looks_typed(t) for t in texts))
                )
            cells_rows.append(texts)
        caption = table.find("caption")
        if caption is not None:
            self.b.add(clean_inline(caption.text_content()), "text")
        if cells_rows and max(len(r) for r in cells_rows) == 1:
            # single-column "tables" are usually layout: keep as text lines
            self.b.add("\n".join(r[0] for r in cells_rows), "text")
            return
        self.b.table(cells_rows, header_first=header_first)


def _closest_table(el):
    p = el.getparent()
    while p is not None and _tag(p) != "table":
        p = p.getparent()
    return p
