"""Share links in headless Chromium: the full-page chat (suggested question, answer with
sources, the rate limit's message) and the widget embedded by a page on another loopback
port through embed.js, which a page from an origin not allowed cannot frame."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import ROOT, ingest_texts
from tests.ui.conftest import CHROMIUM

SCREENSHOTS = ROOT / "var" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.models,  # ingests with the knowledge base's embedders (hash under test-fast)
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
]

DOCS = {
    "backup.md": "# Backup\n\npg_dump writes a consistent backup of one PostgreSQL database as "
    "an SQL script. To restore it, feed the script to psql.",
    "vacuum.md": "# Vacuum\n\nVACUUM reclaims storage occupied by dead tuples.",
}


class HostPages:
    """Another web site: serves one HTML page from its own loopback port."""

    def __init__(self, html: str):
        body = html.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def kb(make_user, make_kb):
    return ingest_texts(make_kb(make_user("alice"), "handbook"), DOCS)


def answer_of(frame, n: int):
    answer = frame.locator("#share-messages .msg.assistant[data-mode]").nth(n - 1)
    answer.wait_for()
    return answer


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_share_page_answers_suggestions_and_shows_the_rate_limit(
    live_server, browser, csp_violations, kb
):
    from chat.models import Conversation, Feedback
    from curation.sharing import share_link_create

    link = share_link_create(
        owner=kb.owner,
        knowledge_bases=[kb],
        title="Database help",
        welcome_message="Ask me about backups.",
        suggested_questions=["How do I back up a database with pg_dump?"],
        rate_limit_per_hour=2,
    )
    context = browser.new_context(locale="en-US")
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_server.url}/s/{link.token}/")
    assert page.locator("h1").inner_text() == "Database help"
    assert "Ask me about backups." in page.locator(".welcome").inner_text()

    page.click("#share-suggestions .suggestion")
    first = answer_of(page, 1)
    assert first.get_attribute("data-mode") == "extractive"
    assert "pg_dump" in first.locator(".bubble").inner_text()
    assert "backup.md" in first.locator(".sources").text_content()

    # The visitor rates the answer: the button shows it, the rating is stored as theirs.
    first.locator(".share-feedback button[data-rating='1']").click()
    first.locator(".share-feedback button[data-rating='1'][aria-pressed='true']").wait_for()
    assert first.locator(".share-feedback-thanks").inner_text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "share-feedback.png"), full_page=True)
    (feedback,) = Feedback.objects.all()
    assert feedback.rating == 1 and feedback.user is None and feedback.visitor

    page.fill("#share-question", "How do I restore it?")
    page.press("#share-question", "Enter")
    answer_of(page, 2)
    assert Conversation.objects.get(share_link=link).messages.count() == 4  # one conversation

    page.fill("#share-question", "And VACUUM?")
    page.click("#share-send")
    page.wait_for_selector("#share-error:not([hidden])")
    assert "Too many questions" in page.locator("#share-error").inner_text()
    assert not errors and not violations, (errors, violations)

    # A Chinese visitor on a phone: the buttons are labelled in Chinese and fit.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN")
    zh = phone.new_page()
    zh.set_default_timeout(20_000)
    zh.goto(f"{live_server.url}/s/{link.token}/")
    zh.click("#share-suggestions .suggestion")
    down = answer_of(zh, 1).locator(".share-feedback button[data-rating='-1']")
    assert down.get_attribute("aria-label") == "没有帮助"
    down.click()
    answer_of(zh, 1).locator(".share-feedback-thanks:has-text('感谢')").wait_for()
    assert zh.evaluate("document.documentElement.scrollWidth") <= 390
    zh.screenshot(path=str(SCREENSHOTS / "share-feedback-zh-390.png"), full_page=True)
    phone.close()
    assert sorted(Feedback.objects.values_list("rating", flat=True)) == [-1, 1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_widget_embedded_by_an_allowed_site_answers_and_other_sites_cannot_frame_it(
    live_server, browser, csp_violations, kb
):
    from curation.sharing import share_link_create

    link = share_link_create(owner=kb.owner, knowledge_bases=[kb], title="Widget help")
    host = HostPages(
        "<!doctype html><title>shop</title><h1>Shop</h1>"
        f'<script src="{live_server.url}/s/{link.token}/embed.js" data-open="true" async>'
        "</script>"
    )
    link.allowed_origins = [host.origin]  # this site may embed it, the next one not
    link.save()
    other = HostPages(
        f'<!doctype html><title>evil</title><iframe id="w" src="{live_server.url}/s/'
        f'{link.token}/widget"></iframe>'
    )
    try:
        context = browser.new_context(locale="en-US")
        violations = csp_violations(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(host.origin + "/")
        page.wait_for_selector("iframe")
        widget = page.frame_locator(".rag-share-widget iframe")
        widget.locator("#share-question").fill("How do I back up a database with pg_dump?")
        widget.locator("#share-send").click()
        answer = widget.locator("#share-messages .msg.assistant[data-mode]")
        answer.wait_for()
        assert answer.get_attribute("data-mode") == "extractive"
        assert "pg_dump" in answer.locator(".bubble").inner_text()
        assert not violations, violations
        # the bubble closes and reopens the chat
        page.click(".rag-share-bubble")
        assert not page.locator(".rag-share-widget iframe").is_visible()

        blocked = context.new_page()
        blocked.goto(other.origin + "/")
        blocked.wait_for_timeout(1500)
        frame = next(f for f in blocked.frames if f != blocked.main_frame)
        assert frame.query_selector("#share-form") is None
        assert any("frame-ancestors" in v for v in violations), violations
    finally:
        host.close()
        other.close()
