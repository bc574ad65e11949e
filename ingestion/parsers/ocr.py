"""Tesseract OCR through its command line (OMP_THREAD_LIMIT=1: many times faster here)."""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess

from .base import ParseError, TransientParseError, join_cjk_spaces

OCR_TIMEOUT_S = 180  # one page or image


class OcrUnavailable(Exception):
    pass


class OcrTimeout(ParseError):
    """OCR of one image took longer than allowed. Permanent: the same image takes as long
    again, so retrying the document would only hold a worker for the same time, again."""


@functools.lru_cache(maxsize=1)
def _tesseract() -> str | None:
    return shutil.which(os.environ.get("TESSERACT_CMD", "tesseract"))


@functools.lru_cache(maxsize=8)
def _installed_languages(cmd: str) -> frozenset[str]:
    try:
        out = subprocess.run(
            [cmd, "--list-langs"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    langs = out.stdout.splitlines()[1:] if out.stdout else []
    return frozenset(x.strip() for x in langs if x.strip())


def ocr_languages(requested: str) -> tuple[str, list[str]]:
    """(languages to use, missing ones). Raises OcrUnavailable when tesseract is missing."""
    cmd = _tesseract()
    if not cmd:
        raise OcrUnavailable("OCR unavailable: tesseract is not installed")
    have = _installed_languages(cmd)
    want = [x for x in requested.split("+") if x]
    use = [x for x in want if x in have] if have else want
    missing = [x for x in want if have and x not in have]
    if not use:
        use = ["eng"] if "eng" in have else sorted(have - {"osd"})[:1]
    if not use:
        raise OcrUnavailable("OCR unavailable: tesseract has no language data installed")
    return "+".join(use), missing


def ocr_image(image, languages: str, *, timeout: float = OCR_TIMEOUT_S) -> str:
    """OCR a PIL image; returns text with paragraphs separated by blank lines."""
    cmd = _tesseract()
    if not cmd:
        raise OcrUnavailable("OCR unavailable: tesseract is not installed")
    buf = io.BytesIO()
    if image.mode not in ("L", "RGB", "1"):
        image = image.convert("RGB")
    image.save(buf, format="PNG")
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    try:
        proc = subprocess.run(
            [cmd, "stdin", "stdout", "-l", languages, "--psm", "3"],
            input=buf.getvalue(),
            capture_output=True,
            timeout=max(timeout, 0.001),
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OcrTimeout(f"OCR took longer than {timeout:.0f} s") from exc
    except OSError as exc:
        raise OcrUnavailable(f"OCR unavailable: {exc}") from exc
    if proc.returncode < 0:
        raise TransientParseError(f"OCR process was killed (signal {-proc.returncode})")
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise TransientParseError("OCR failed: " + (err[-1] if err else f"exit {proc.returncode}"))
    text = proc.stdout.decode("utf-8", "replace")
    return join_cjk_spaces(text.replace("\x0c", "\n"))
