"""Document metadata: tags and key-value pairs, validated in one place for every way in
(upload form, API, `manage.py ingest`, the document page's edit form).

Values are strings, finite numbers, booleans or ISO dates kept as "YYYY-MM-DD" strings, so
that recall can filter on them (ingestion.scope: numbers compare numerically, dates as ISO
text). Keys that name automatic fields (type, size, pages, ...) are reserved for those.
"""

from __future__ import annotations

import json
import math
import re

from ingestion.models import Document
from ingestion.scope import AUTOMATIC_FIELDS, META_KEY_RE

MAX_TAGS = 20
MAX_TAG_CHARS = 100
MAX_META_KEYS = 50
MAX_META_TEXT = 500
NUMBER_RE = re.compile(r"-?\d+(\.\d+)?")


class InvalidMetadata(ValueError):
    """Tags or metadata a document may not carry; the message is user-facing."""


def clean_tags(tags) -> list[str]:
    """A list of distinct, stripped tags (a comma-separated string is split)."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = tags.split(",")
    if not isinstance(tags, list | tuple) or not all(isinstance(t, str) for t in tags):
        raise InvalidMetadata("tags: a list of strings expected")
    tags = list(dict.fromkeys(t.strip() for t in tags if t.strip()))
    if len(tags) > MAX_TAGS:
        raise InvalidMetadata(f"tags: at most {MAX_TAGS} tags")
    for tag in tags:
        if len(tag) > MAX_TAG_CHARS:
            raise InvalidMetadata(f"tags: a tag has at most {MAX_TAG_CHARS} characters")
    return tags


def clean_meta(meta) -> dict:
    """A dict of key -> string / number / bool; a JSON string is decoded first."""
    if meta is None or meta == "":
        return {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError as exc:
            raise InvalidMetadata("meta: not valid JSON") from exc
    if not isinstance(meta, dict):
        raise InvalidMetadata("meta: a JSON object expected")
    if len(meta) > MAX_META_KEYS:
        raise InvalidMetadata(f"meta: at most {MAX_META_KEYS} keys")
    out = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not META_KEY_RE.fullmatch(key):
            raise InvalidMetadata(
                f"meta: invalid key {key!r} (letters, digits, _ . - ; 1 to 64 characters)"
            )
        if key in AUTOMATIC_FIELDS:
            raise InvalidMetadata(f"meta: {key!r} is an automatic field and cannot be set")
        if isinstance(value, str):
            value = value.strip()
            if len(value) > MAX_META_TEXT:
                raise InvalidMetadata(f"meta.{key}: at most {MAX_META_TEXT} characters")
        elif isinstance(value, bool):
            pass
        elif isinstance(value, int | float):
            if not math.isfinite(value):
                raise InvalidMetadata(f"meta.{key}: a finite number expected")
        else:
            raise InvalidMetadata(f"meta.{key}: a string, a number, true/false or a date expected")
        out[key] = value
    return out


def parse_meta_value(text: str):
    """`key=value` text as typed: numbers become numbers, true/false booleans, anything else
    (ISO dates included) stays a string."""
    text = text.strip()
    if NUMBER_RE.fullmatch(text):
        return float(text) if "." in text else int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_meta_lines(lines) -> dict:
    """`key=value` pairs (one per line, or a list of them) into a cleaned meta dict."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    meta = {}
    for line in lines:
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise InvalidMetadata(f"metadata: {line!r} is not key=value")
        meta[key.strip()] = parse_meta_value(value)
    return clean_meta(meta)


def meta_as_lines(meta: dict) -> str:
    """The inverse of parse_meta_lines, for edit forms."""

    def show(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return "\n".join(f"{k}={show(v)}" for k, v in meta.items())


def document_set_metadata(*, document: Document, tags=None, meta=None) -> Document:
    """Replace the tags and/or the metadata of a document (None leaves that part as is)."""
    fields = []
    if tags is not None:
        document.tags = clean_tags(tags)
        fields.append("tags")
    if meta is not None:
        document.meta = clean_meta(meta)
        fields.append("meta")
    if fields:
        document.save(update_fields=[*fields, "updated_at"])
    return document


def automatic_fields(document: Document) -> dict:
    """The automatic fields, under the keys filters use for them."""
    return {
        "type": document.extension,
        "language": document.language,
        "uploaded_by": document.uploaded_by.username if document.uploaded_by_id else "",
        "uploaded_at": document.created_at.date().isoformat() if document.created_at else "",
        "pages": document.page_count,
        "size": document.size,
        "source_url": document.source_url,
    }
