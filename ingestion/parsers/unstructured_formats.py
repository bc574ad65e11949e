"""Formats we read through unstructured's partitioners (pandoc-backed): ODT and RTF.

The common formats have direct readers (faster, and they keep pages, sheets and slides);
unstructured widens what a user can upload without us writing a reader per format.
"""

from __future__ import annotations

from pathlib import Path

from .base import Context, ParseError, Section, SectionBuilder

_KIND = {"ListItem": "list", "Table": "table", "CodeSnippet": "code", "Formula": "code"}


def parse_with_unstructured(path: Path, kind: str, ctx: Context) -> list[Section]:
    import pypandoc

    try:
        pypandoc.get_pandoc_path()
    except OSError as exc:
        raise ParseError(f"{kind.upper()} files need pandoc, which is not installed") from exc
    try:
        if kind == "odt":
            from unstructured.partition.odt import partition_odt as partition
        else:
            from unstructured.partition.rtf import partition_rtf as partition
        elements = partition(filename=str(path))
    except ParseError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken file, whatever the library says
        raise ParseError(f"not a valid {kind.upper()} document ({type(exc).__name__})") from exc
    builder = SectionBuilder()
    for element in elements:
        category = getattr(element, "category", "")
        text = str(element)
        if category == "Title":
            depth = getattr(element.metadata, "category_depth", None) or 0
            builder.title(text, depth + 1)
        elif category == "Table":
            html = getattr(element.metadata, "text_as_html", None)
            rows = _rows_from_html(html) if html else None
            if rows:
                builder.table(rows)
            else:
                builder.add(text)
        elif category in ("Header", "Footer", "PageBreak"):
            continue
        else:
            builder.add(text, kind=_KIND.get(category, "text"))
    ctx.report(1.0)
    return builder.sections


def _rows_from_html(html: str) -> list[list[str]]:
    from lxml import html as lxml_html

    tree = lxml_html.fromstring(html)
    return [
        [cell.text_content().strip() for cell in row.xpath("./th|./td")]
        for row in tree.xpath(".//tr")
    ]
