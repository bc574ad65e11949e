"""End to end in headless Chromium against the live server, with the real PostgreSQL, Redis
and a Celery worker: sign up, create a knowledge base, upload a PDF and a DOCX, wait for them,
hit-test, ask, follow a citation to the right page, give feedback, open the dashboards, switch
to Chinese. Screenshots of every page at 1280 and 390 px land in var/screenshots/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, ROOT
from tests.ui.conftest import CHROMIUM

SCREENSHOTS = ROOT / "var" / "screenshots"
WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.models,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"{CHROMIUM} is missing: install Debian's chromium (make system-deps)",
    ),
]


class Shooter:
    """Screenshots of the current page at both widths, then back to the desktop width."""

    def __init__(self, page):
        self.page = page
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.paths: list[Path] = []

    def __call__(self, name: str) -> None:
        for label, (width, height) in WIDTHS.items():
            self.page.set_viewport_size({"width": width, "height": height})
            self.page.wait_for_timeout(50)
            if label == "phone":
                overflow = self.page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 1, f"{name}: page scrolls sideways at {width}px ({overflow}px)"
            path = SCREENSHOTS / f"{name}-{width}.png"
            self.page.screenshot(path=str(path), full_page=True)
            self.paths.append(path)
        self.page.set_viewport_size({"width": 1280, "height": 800})


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(420)
def test_sign_up_upload_ask_cite_feedback_dashboard(
    celery_worker_process, live_server, browser, csp_violations, settings
):
    from chat.models import Feedback, Message
    from ingestion.models import Document, DocumentStatus, KnowledgeBase

    settings.OPENAI_BASE_URL = ""  # no LLM: the chat answers with a cited extract
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    violations = csp_violations(context)  # the site's Content-Security-Policy blocks nothing
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    shot = Shooter(page)
    url = live_server.url

    # Sign up (lands on the knowledge-base list).
    page.goto(url + "/accounts/signup/")
    shot("signup")
    page.fill("#id_username", "erin")
    page.fill("#id_password1", "correct-Horse-42")
    page.fill("#id_password2", "correct-Horse-42")
    page.click("button[type=submit]:has-text('Create account')")
    page.wait_for_url(url + "/kb/")

    # Create a knowledge base.
    page.fill("#id_name", "Manuals")
    page.fill("#id_description", "libtasn1 and PostgreSQL")
    page.click("#kb-create button[type=submit]")
    page.wait_for_url(re.compile(r"/kb/\d+/$"))
    kb = KnowledgeBase.objects.get(name="Manuals")

    # Upload a PDF and a DOCX through the portal and wait until both are ready.
    page.set_input_files(
        "#file-input",
        [FIXTURES / "libtasn1.pdf", FIXTURES / "postgresql-indexes-intro.en.docx"],
    )
    page.wait_for_selector("#documents tr[data-status]")
    # A function, not an expression: Playwright evals expressions in the page, which the
    # site's Content-Security-Policy (no 'unsafe-eval') refuses.
    page.wait_for_function(
        "() => document.querySelectorAll('#documents tr[data-status=ready]').length === 2"
        " || document.querySelector('#documents tr[data-status=failed]') !== null",
        timeout=240_000,
        polling=500,
    )
    statuses = dict(kb.documents.values_list("original_name", "status"))
    assert set(statuses.values()) == {DocumentStatus.READY}, (
        statuses,
        Document.objects.values("error"),
    )
    shot("kb-detail")

    # Hit testing: recall and reranked lists side by side, with the cut-off.
    page.click("nav.tabs >> text=Hit testing")
    page.fill("#hit-q", "What does the Libtasn1 library provide?")
    # The first search loads the models in the live server: slow on a busy 2-core machine.
    page.click("#hit-form button[type=submit]", timeout=120_000)
    page.wait_for_selector("#rerank-list .hit")
    assert page.locator("#recall-list .hit").count() >= 2
    shot("hit-test")

    # Ask: the streamed answer arrives with [n] markers and source cards.
    page.goto(f"{url}/chat/?kb={kb.pk}")
    assert page.is_checked(f"input[name=kb][value='{kb.pk}']")
    shot("chat-empty")
    page.fill("textarea[name=question]", "What does the Libtasn1 library provide?")
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg.assistant .actions", timeout=120_000)
    answer = page.locator(".msg.assistant .answer")
    assert answer.inner_text().strip()
    message = Message.objects.filter(role="assistant").latest("created_at")
    assert message.mode == "extractive", (message.mode, message.error)
    shot("chat-answer")

    # A citation opens its source card; the card opens the original at the right place.
    cite = page.locator(".msg.assistant a.cite").first
    n = int(cite.inner_text().strip("[]"))
    cite.click()
    card = page.locator(f"#src-{message.pk}-{n}")
    assert "flash" in (card.get_attribute("class") or "")
    source = next(s for s in message.sources if s["n"] == n)
    link = card.locator("a", has_text="Open original")
    assert link.get_attribute("href") == source["url"]
    if source["page"] and source["document"].endswith(".pdf"):
        assert source["url"].endswith(f"/pdf?page={source['page']}&chunk={source['chunk_id']}")
        with context.expect_page() as popup_info:
            link.click()
        popup = popup_info.value
        popup.wait_for_selector("#pdf-status[data-state=found]")
        assert popup.locator("mark.pdf-mark").count() > 0
        popup.close()
        chunk_page = kb.chunks.get(pk=source["chunk_id"]).page
        assert chunk_page == source["page"]
    else:
        with context.expect_page() as popup_info:
            link.click()
        popup = popup_info.value
        popup.wait_for_load_state()
        assert popup.locator(f"#chunk-{source['chunk_id']}.highlight").is_visible()
        popup.close()

    # Feedback.
    page.click(".msg.assistant .actions button.thumb >> nth=0")
    page.wait_for_selector(".msg.assistant .thumb.chosen")
    assert Feedback.objects.filter(message=message, rating=1).exists()

    # The conversation reloads from the list with its history.
    page.goto(f"{url}/chat/{message.conversation_id}/")
    page.wait_for_selector(".msg.assistant .actions")
    shot("chat-conversation")

    # The owner's dashboard for this knowledge base, and the overall one.
    page.goto(f"{url}/kb/{kb.pk}/dashboard/")
    assert page.inner_text("#stat-questions") == "1"
    assert page.inner_text("#stat-documents") == "2"
    assert page.locator("svg.chart").count() >= 5
    assert page.is_visible("#no-evaluation")
    shot("kb-dashboard")
    page.click("nav >> text=Dashboard")
    page.wait_for_url(url + "/dashboard/")
    shot("dashboard")

    # The other pages of a knowledge base.
    for name, path in [
        ("kb-list", "/kb/"),
        ("kb-members", f"/kb/{kb.pk}/members/"),
        ("kb-rename", f"/kb/{kb.pk}/settings/"),
        ("kb-delete-confirm", f"/kb/{kb.pk}/delete/"),
        (
            "document-view",
            f"/documents/{kb.documents.get(original_name__endswith='.docx').pk}/view",
        ),
        ("password-change", "/accounts/password_change/"),
    ]:
        page.goto(url + path)
        shot(name)

    # Keyboard: the skip link is the first stop and leads to the content.
    page.goto(url + "/kb/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"

    # Switch to Chinese and back.
    page.click("button[name=language][value=zh-hans]")
    page.wait_for_selector("html[lang=zh-hans]")
    assert "知识库" in page.inner_text("h1")
    shot("kb-list-zh")
    page.goto(f"{url}/kb/{kb.pk}/dashboard/")
    shot("kb-dashboard-zh")
    page.click("button[name=language][value=en]")
    page.wait_for_selector("html[lang=en]")

    # Log out, then the login page.
    page.click("button:has-text('Log out')")
    page.wait_for_url(re.compile(r"/accounts/login/"))
    shot("login")

    assert not problems, problems
    assert not violations, violations
    assert all(p.stat().st_size > 0 for p in shot.paths)
    context.close()
