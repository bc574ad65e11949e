"""Strict parsing of untrusted input, in one place: request values become ints, finite
floats and storable text here, or are refused, so that no odd input reaches the database
(and turns into a 500) from any view, form or API endpoint."""

from __future__ import annotations

import math
import re

_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only: str.isdigit() also accepts '²' and '٣'
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_int(value) -> int | None:
    """A non-negative int written in ASCII digits (ids, counts), or None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    value = value.strip()
    return int(value) if _DIGITS.fullmatch(value) else None


def parse_float(value) -> float | None:
    """A finite float, or None (absent, not a number, NaN or ±infinity)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def text_problem(value: str) -> str | None:
    """Why PostgreSQL (UTF-8 text) cannot store this string, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if _SURROGATE.search(value):
        return "must not contain unpaired surrogate characters"
    return None


def storable_text(value: str) -> str:
    """The string without the characters PostgreSQL cannot store (NUL, lone surrogates)."""
    return _SURROGATE.sub("", value.replace("\x00", ""))
