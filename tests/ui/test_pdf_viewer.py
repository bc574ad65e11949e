"""The PDF viewer opens a cited PDF at its page and highlights the cited passage, in real Chromium
under the site's Content-Security-Policy: the right column of a two-column page (the same
sentence also stands in the left column), a Chinese page, and a passage that runs on to the
next page. Documents and chunks are made directly, without the ingestion pipeline; each
chunk's text is what pypdfium2 (the parser's PDF backend) extracts from the page.

Screenshots land in var/screenshots/pdf-viewer-*.png."""

from __future__ import annotations

import difflib
import hashlib
import unicodedata
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from tests.conftest import FIXTURES, ROOT
from tests.ui.conftest import CHROMIUM

SCREENSHOTS = ROOT / "var" / "screenshots"
TWO_COLUMN = FIXTURES / "two-column.en.pdf"
CHINESE = FIXTURES / "maint-guide.zh-cn-p9-10.pdf"

needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing")


def normalise(text: str) -> str:
    """Letters and digits only, as the viewer compares them."""
    return "".join(c for c in unicodedata.normalize("NFKC", text).lower() if c.isalnum())


def page_text(path: Path, page: int, *, left: float | None = None) -> str:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(path)
    try:
        p = pdf[page - 1]
        textpage = p.get_textpage()
        if left is None:
            return textpage.get_text_range()
        return textpage.get_text_bounded(left=p.get_width() * left)
    finally:
        pdf.close()


def between(text: str, start: str, end: str) -> str:
    i = text.index(start)
    return text[i : text.index(end, i) + len(end)]


def make_document(kb, path: Path, chunks: list[dict]):
    from ingestion.models import Chunk, Document, DocumentStatus

    data = path.read_bytes()
    document = Document(
        knowledge_base=kb,
        original_name=path.name,
        content_hash=hashlib.sha256(data).hexdigest(),
        status=DocumentStatus.READY,
        size=len(data),
    )
    document.file.save(path.name, ContentFile(data), save=False)
    document.save()
    return document, [
        Chunk.objects.create(document=document, knowledge_base=kb, ordinal=n, **fields)
        for n, fields in enumerate(chunks)
    ]


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def viewer(live_server, browser, csp_violations, make_user, make_kb, media):
    """Logs a user in; `open(url)` loads a viewer page and waits until it has done its work."""
    from django.conf import settings
    from django.test import Client

    user = make_user("vera")
    kb = make_kb(user, "manuals")
    client = Client()
    client.force_login(user)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}]
    )
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))

    class Viewer:
        def __init__(self):
            self.kb, self.page, self.errors, self.violations = kb, page, errors, violations

        def open(self, path: str, state: str = "found"):
            page.goto(live_server.url + path)
            page.wait_for_selector(
                ", ".join(f"#pdf-status[data-state={s}]" for s in ("found", "notFound", "failed"))
            )
            assert page.get_attribute("#pdf-status", "data-state") == state, errors
            page.wait_for_timeout(300)  # let the scroll to the first mark settle

        def marks(self, page_number: int | None = None) -> list[dict]:
            scope = f'.pdf-page[data-page-number="{page_number}"] ' if page_number else ""
            return page.eval_on_selector_all(
                scope + "mark.pdf-mark",
                """marks => marks.map(m => {
                    const box = m.getBoundingClientRect();
                    const pageBox = m.closest(".pdf-page").getBoundingClientRect();
                    return {text: m.textContent, left: box.left - pageBox.left,
                            right: box.right - pageBox.left, top: box.top, bottom: box.bottom,
                            pageWidth: pageBox.width,
                            page: Number(m.closest(".pdf-page").dataset.pageNumber)};
                })""",
            )

        def shoot(self, name: str) -> Path:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            path = SCREENSHOTS / f"pdf-viewer-{name}.png"
            page.screenshot(path=str(path))
            return path

    yield Viewer()
    context.close()


def assert_covers(marks: list[dict], passage: str) -> None:
    """The marked text is the passage: >= 90% of the passage marked, >= 95% of the marks in it."""
    marked, wanted = normalise("".join(m["text"] for m in marks)), normalise(passage)
    matcher = difflib.SequenceMatcher(None, marked, wanted, autojunk=False)
    same = sum(block.size for block in matcher.get_matching_blocks())
    assert same >= 0.9 * len(wanted), (marked, wanted)
    assert same >= 0.95 * len(marked), (marked, wanted)


def assert_first_mark_in_view(viewer, marks: list[dict]) -> None:
    height = viewer.page.evaluate("window.innerHeight")
    first = marks[0]
    assert 0 <= first["top"] and first["bottom"] <= height, (first, height)


@pytest.mark.browser
@needs_chromium
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(240)
@pytest.mark.parametrize("width", [1280, 390])
def test_right_column_passage_is_highlighted_on_its_page(viewer, width):
    right = page_text(TWO_COLUMN, 2, left=0.5)
    # Starts mid-sentence, crosses a line-break hyphen, and holds the sentence that the left
    # column has too.
    passage = between(right, "pinch out the side", "second week with a")
    assert "\ufffe" in passage or "\x02" in passage  # pdfium's mark for the split "stre-ngth"
    assert "Water the beds" in page_text(TWO_COLUMN, 2, left=None).split("Tomatoes need")[0]
    document, (chunk,) = make_document(
        viewer.kb, TWO_COLUMN, [{"text": passage, "page": 2, "page_end": 2}]
    )
    viewer.page.set_viewport_size({"width": width, "height": 800 if width > 400 else 844})

    viewer.open(reverse("document_pdf", args=[document.pk]) + f"?page=2&chunk={chunk.pk}")

    page = viewer.page
    assert page.title().startswith("two-column.en.pdf")
    assert page.input_value("#pdf-page-input") == "2"
    assert page.inner_text("#pdf-page-count") == "2"
    marks = viewer.marks()
    assert marks and {m["page"] for m in marks} == {2}
    assert_covers(marks, passage)
    # Every mark is in the right column.
    assert all(m["left"] >= m["pageWidth"] * 0.45 for m in marks), marks
    assert_first_mark_in_view(viewer, marks)
    download = page.locator("a[download]")
    assert download.get_attribute("href") == reverse("document_file", args=[document.pk])
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"the viewer scrolls sideways at {width}px"
    viewer.shoot(f"two-column-{width}")

    # The reader can move to the other page and back.
    page.click("#pdf-prev")
    page.wait_for_selector('.pdf-page[data-page-number="1"][data-rendered]')
    page.wait_for_function("document.querySelector('#pdf-page-input').value === '1'")
    page.fill("#pdf-page-input", "2")
    page.dispatch_event("#pdf-page-input", "change")
    page.wait_for_function("document.querySelector('#pdf-page-input').value === '2'")

    # Zooming in renders the page bigger, passage marked again.
    second = page.locator('.pdf-page[data-page-number="2"]')
    before = second.bounding_box()["width"]
    page.click("#pdf-zoom-in")
    page.wait_for_selector('.pdf-page[data-page-number="2"][data-rendered] mark.pdf-mark')
    assert second.bounding_box()["width"] > before * 1.2
    assert_covers(viewer.marks(2), passage)
    assert viewer.violations == [] and viewer.errors == []


@pytest.mark.browser
@needs_chromium
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(240)
def test_chinese_passage_is_highlighted_and_runs_on_to_the_next_page(viewer):
    first, second = page_text(CHINESE, 1), page_text(CHINESE, 2)
    passage = between(second, "以上给出的简短描述", "重新阅读上面提到的\r\n文档。")
    running = (
        between(first, "• quilt - 此软件包", "quilt.pdf.gz.)")
        + "\n"
        + between(second, "• xutils-dev", "xmkmf(1))")
    )
    document, (chunk, run_on) = make_document(
        viewer.kb,
        CHINESE,
        [
            {"text": passage, "page": 2, "page_end": 2},
            {"text": running, "page": 1, "page_end": 2},
        ],
    )

    viewer.open(reverse("document_pdf", args=[document.pk]) + f"?page=2&chunk={chunk.pk}")
    assert viewer.page.input_value("#pdf-page-input") == "2"
    marks = viewer.marks()
    assert marks and {m["page"] for m in marks} == {2}
    assert_covers(marks, passage)
    assert_first_mark_in_view(viewer, marks)
    viewer.shoot("chinese")

    viewer.open(reverse("document_pdf", args=[document.pk]) + f"?page=1&chunk={run_on.pk}")
    marks = viewer.marks()
    assert {m["page"] for m in marks} == {1, 2}
    assert_covers(marks, running)
    assert_first_mark_in_view(viewer, marks)
    viewer.shoot("chinese-run-on")
    assert viewer.violations == [] and viewer.errors == []


@pytest.mark.browser
@needs_chromium
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(240)
def test_passage_in_a_typeset_english_manual_is_highlighted(viewer):
    manual = FIXTURES / "libtasn1.pdf"  # TeX: embedded Type 1 fonts, ligatures
    passage = between(page_text(manual, 5), "The parser is case sensitive.", "syntax below:")
    document, (chunk,) = make_document(viewer.kb, manual, [{"text": passage, "page": 5}])

    viewer.open(reverse("document_pdf", args=[document.pk]) + f"?page=5&chunk={chunk.pk}")
    assert viewer.page.input_value("#pdf-page-input") == "5"
    marks = viewer.marks()
    assert marks and {m["page"] for m in marks} == {5}
    assert_covers(marks, passage)
    assert_first_mark_in_view(viewer, marks)
    viewer.shoot("english-manual")

    # Cited on the wrong page: the viewer says so, marks nothing, and still shows that page.
    viewer.open(
        reverse("document_pdf", args=[document.pk]) + f"?page=7&chunk={chunk.pk}", "notFound"
    )
    assert viewer.page.input_value("#pdf-page-input") == "7"
    assert viewer.marks() == []
    assert viewer.violations == [] and viewer.errors == []


def test_another_users_pdf_viewer_is_404(client, make_user, make_kb, media):
    document, (chunk,) = make_document(
        make_kb(make_user("olga"), "olga's"), TWO_COLUMN, [{"text": "Tomatoes", "page": 2}]
    )
    url = reverse("document_pdf", args=[document.pk]) + f"?page=2&chunk={chunk.pk}"
    client.force_login(make_user("mallory"))
    assert client.get(url).status_code == 404


def test_viewer_shows_only_a_chunk_of_its_own_document(client, make_user, make_kb, media):
    olga = make_user("olga")
    kb = make_kb(olga, "manuals")
    document, (chunk,) = make_document(kb, TWO_COLUMN, [{"text": "Tomatoes need sun.", "page": 2}])
    _, (elsewhere,) = make_document(kb, CHINESE, [{"text": "以上给出的简短描述", "page": 2}])
    client.force_login(olga)
    url = reverse("document_pdf", args=[document.pk])
    own = client.get(url + f"?chunk={chunk.pk}")
    assert own.context["passage"] == "Tomatoes need sun." and own.context["page"] == 2
    assert client.get(url + f"?page=1&chunk={elsewhere.pk}").context["passage"] == ""
    assert client.get(url + "?page=x&chunk=%C2%B2").context["page"] == 1


def test_a_document_that_is_not_a_pdf_opens_in_the_text_view(client, make_user, make_kb, media):
    olga = make_user("olga")
    text = FIXTURES / "postgresql-queries-with.en.md"
    document, (chunk,) = make_document(make_kb(olga, "notes"), text, [{"text": "WITH", "page": 1}])
    client.force_login(olga)
    response = client.get(reverse("document_pdf", args=[document.pk]) + f"?chunk={chunk.pk}")
    assert response.status_code == 302
    assert response["Location"] == (
        reverse("document_view", args=[document.pk]) + f"?chunk={chunk.pk}#chunk-{chunk.pk}"
    )


def test_pdf_sources_open_in_the_viewer():
    from chat.services import source_url
    from retrieval.types import Candidate

    def candidate(name, page):
        return Candidate(
            chunk_id=7, document_id=3, document_name=name, text="", context="", page=page
        )

    assert source_url(candidate("Manual.PDF", 4)) == "/documents/3/pdf?page=4&chunk=7"
    assert source_url(candidate("notes.md", None)) == "/documents/3/view?chunk=7#chunk-7"
