"""Check a citation question set against its PDF.

    .venv/bin/python bench/citations/check.py PDF SET.jsonl

Every line must have the keys id, question, page and quote; ids must be unique; the
quote (at most 200 characters) must occur on the stated 1-based page after whitespace
normalisation and on no other page. Prints one line per question and exits 1 on any
failure.
"""

from __future__ import annotations

import json
import re
import sys

import pypdfium2

KEYS = {"id", "question", "page", "quote"}


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def page_texts(pdf_path: str) -> list[str]:
    pdf = pypdfium2.PdfDocument(pdf_path)
    try:
        return [normalise(pdf[i].get_textpage().get_text_range()) for i in range(len(pdf))]
    finally:
        pdf.close()


def problems(row: dict, pages: list[str]) -> list[str]:
    if set(row) != KEYS:
        return [f"keys {sorted(row)}"]
    page, quote = row["page"], normalise(row["quote"])
    if not isinstance(page, int) or not 1 <= page <= len(pages):
        return [f"page {page!r} outside 1..{len(pages)}"]
    found = []
    if not quote or len(row["quote"]) > 200:
        found.append("quote empty or over 200 characters")
    if quote not in pages[page - 1]:
        found.append(f"quote not on page {page}")
    others = [i + 1 for i, text in enumerate(pages) if i != page - 1 and quote in text]
    if others:
        found.append(f"quote also on pages {others}")
    return found


def main(pdf_path: str, set_path: str) -> int:
    pages = page_texts(pdf_path)
    ids: set[str] = set()
    used: set[int] = set()
    failed = 0
    with open(set_path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    for row in rows:
        found = problems(row, pages)
        if row.get("id") in ids:
            found.append("duplicate id")
        ids.add(row.get("id"))
        used.add(row.get("page"))
        failed += bool(found)
        print(f"{row.get('id')}  page {row.get('page')}  {'; '.join(found) or 'ok'}")
    print(f"{len(rows)} questions on {len(used)} pages, {failed} failed")
    return 1 if failed or not rows else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
