"""Hostile images and scans: oversized images are refused before decoding, and OCR time is
bounded per document (a timeout is permanent, never a retry of the whole document)."""

import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from ingestion.parsers import pdf as pdfmod
from ingestion.parsers.base import TransientParseError
from ingestion.parsers.ocr import OcrTimeout, ocr_image
from ingestion.parsing import ParseError, ParseLimits, parse_file

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None,
    reason="tesseract is not installed (bash scripts/system-deps.sh installs it)",
)


@pytest.fixture(autouse=True)
def restore_pillow_limit():
    saved = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = saved


@pytest.mark.parametrize("factor", [1.01, 1.5, 1.99, 3])
def test_image_over_the_pixel_limit_is_refused(tmp_path, factor, monkeypatch):
    # Between 1x and 2x the limit Pillow only warns and decodes anyway.
    limit = 10_000
    side = int((limit * factor) ** 0.5) + 1
    p = tmp_path / "big.png"
    Image.new("L", (side, side), 255).save(p)

    def must_not_ocr(*args, **kwargs):
        raise AssertionError("an oversized image was decoded and OCR'd")

    monkeypatch.setattr(pdfmod, "ocr_image", must_not_ocr)
    with pytest.raises(ParseError, match="too large") as info:
        parse_file(p, filename="big.png", limits=ParseLimits(max_image_pixels=limit))
    assert "pixels" in str(info.value) and "decompression" not in str(info.value).lower()


def test_image_under_the_limit_is_read(tmp_path, monkeypatch):
    p = tmp_path / "ok.png"
    Image.new("L", (90, 90), 255).save(p)
    monkeypatch.setattr(pdfmod, "ocr_languages", lambda langs: ("eng", []))
    monkeypatch.setattr(pdfmod, "ocr_image", lambda image, langs, timeout: "Hello from OCR.")
    doc = parse_file(p, filename="ok.png", limits=ParseLimits(max_image_pixels=10_000))
    assert "Hello from OCR" in doc.sections[0].text


def test_ocr_time_is_bounded_per_document_and_kept_text_survives(monkeypatch):
    calls = []

    def slow_ocr(image, languages, *, timeout):
        calls.append(timeout)
        time.sleep(0.3)
        return "Text that OCR found on this page of the scan."

    monkeypatch.setattr(pdfmod, "ocr_languages", lambda langs: ("eng", []))
    monkeypatch.setattr(pdfmod, "ocr_image", slow_ocr)
    doc = parse_file(
        FIXTURES / "scanned-maint-guide.zh-cn.pdf",
        filename="scan.pdf",
        limits=ParseLimits(ocr_max_seconds=0.2),
    )
    assert len(calls) == 1 and calls[0] <= 0.2  # page 2 is neither rendered nor OCR'd
    assert "OCR found" in " ".join(s.text for s in doc.sections)
    assert any("2" in w and "took too long" in w for w in doc.warnings)


def test_ocr_timeout_with_nothing_extracted_fails_clearly_and_for_good(monkeypatch):
    def timing_out(image, languages, *, timeout):
        raise OcrTimeout(f"OCR took longer than {timeout:.0f} s")

    monkeypatch.setattr(pdfmod, "ocr_languages", lambda langs: ("eng", []))
    monkeypatch.setattr(pdfmod, "ocr_image", timing_out)
    with pytest.raises(ParseError, match="took too long") as info:
        parse_file(FIXTURES / "scanned-maint-guide.zh-cn.pdf", filename="scan.pdf")
    assert not isinstance(info.value, TransientParseError)


@needs_tesseract
def test_real_tesseract_timeout_is_permanent():
    image = Image.open(FIXTURES / "scanned-libtasn1-page3.en.png")
    with pytest.raises(OcrTimeout) as info:
        ocr_image(image, "eng", timeout=0.01)
    assert isinstance(info.value, ParseError)
    assert not isinstance(info.value, TransientParseError)


@needs_tesseract
def test_real_image_ocr_over_the_document_budget_is_refused(tmp_path):
    p = tmp_path / "scan.png"
    shutil.copy(FIXTURES / "scanned-libtasn1-page3.en.png", p)
    with pytest.raises(ParseError, match="OCR took too long .at most 0.01 s per document"):
        parse_file(p, filename="scan.png", limits=ParseLimits(ocr_max_seconds=0.01))
