"""The knowledge base's page lists its FAQ document as "FAQ entries (n)", linked to the FAQ
page, without the re-ingest and delete buttons (headless Chromium, under the site's CSP)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from curation.faq import faq_add, faq_document
from ingestion.models import Document, DocumentStatus
from tests.ui.conftest import CHROMIUM, browser, csp_violations  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_faq_row_links_to_the_faq_page_without_actions(
    live_server,
    browser,  # noqa: F811
    csp_violations,  # noqa: F811
    make_user,
    make_kb,
):
    owner = make_user("alice")
    kb = make_kb(owner, "Manuals", embedders=[])  # no model to load
    faq_add(knowledge_base=kb, question="How do I reset my password?", answer="Use the link.")
    faq = faq_document(knowledge_base=kb)
    Document.objects.create(
        knowledge_base=kb,
        original_name="guide.md",
        content_hash="1" * 64,
        status=DocumentStatus.READY,
    )
    context = browser.new_context(locale="en-US")
    violations = csp_violations(context)
    page = context.new_page()
    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-Test-1234")
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r"/kb/$"))

    page.goto(f"{live_server.url}/kb/{kb.pk}/")
    row = page.locator(f"#documents tr[data-id='{faq.pk}']")
    row.wait_for()
    link = row.locator("a")
    assert link.inner_text() == "FAQ entries (1)"
    assert link.get_attribute("href") == f"/kb/{kb.pk}/faqs/"
    assert row.locator("button").count() == 0
    other = page.locator("#documents tr", has_text="guide.md")
    assert other.locator("button").count() == 2  # re-ingest and delete, as before
    link.click()
    page.wait_for_url(re.compile(rf"/kb/{kb.pk}/faqs/$"))
    assert "How do I reset my password?" in page.inner_text("main")
    assert violations == []
    context.close()
