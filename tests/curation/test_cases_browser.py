"""Saving a test case from hit testing in headless Chromium, under the site's CSP: ticking a
passage ticks its twin in the other list, the button waits for a tick, and the saved case
holds the query and the passage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from curation.models import SavedCase
from tests.conftest import make_chunk
from tests.ui.conftest import CHROMIUM, browser, csp_violations  # noqa: F401 - fixtures

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_owner_ticks_passages_and_saves_a_case(
    live_server,
    browser,  # noqa: F811
    csp_violations,  # noqa: F811
    make_user,
    make_kb,
    settings,
):
    settings.RAG_SUPPORT_K = 0  # no sentence scorer to load: the order is the reranker's
    from django.contrib.postgres.search import SearchVector

    from ingestion.models import Chunk, Document, DocumentStatus
    from retrieval.text import TS_CONFIG

    owner = make_user("alice")
    kb = make_kb(owner, "Manuals", embedders=[])  # keyword recall only: no model needed
    for i, (name, text) in enumerate(
        {
            "backup.md": "pg_dump writes a backup of one database.",
            "vacuum.md": "VACUUM reclaims storage; take a backup first.",
        }.items()
    ):
        doc = Document.objects.create(
            knowledge_base=kb,
            original_name=name,
            content_hash=str(i) * 64,
            status=DocumentStatus.READY,
        )
        make_chunk(kb, doc, 0, text)
    Chunk.objects.filter(knowledge_base=kb).update(
        search_vector=SearchVector("search_text", config=TS_CONFIG)
    )
    context = browser.new_context(locale="en-US")
    violations = csp_violations(context)
    page = context.new_page()
    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-Test-1234")
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r"/kb/$"))

    page.goto(f"{live_server.url}/kb/{kb.pk}/hit-test/?q=backup")
    assert page.is_disabled("#save-case")
    first = page.locator("#final-list input[name=chunk]").first
    chunk_id = first.get_attribute("value")
    first.check()
    twin = page.locator(f"#rerank-list input[name=chunk][value='{chunk_id}']")
    assert twin.is_checked()
    assert page.is_enabled("#save-case")
    page.click("#save-case")
    page.wait_for_url(re.compile(r"/hit-test/\?q=backup$"))
    assert "Saved as a test case." in page.inner_text("main")
    case = SavedCase.objects.get(knowledge_base=kb)
    assert case.query == "backup" and [r["chunk_id"] for r in case.relevant] == [int(chunk_id)]
    assert violations == []
    context.close()
