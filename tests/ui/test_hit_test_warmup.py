"""Hit testing right after a restart, in headless Chromium: while the models load the page
says so, and it runs the search by itself once they are loaded (static JS, no CSP violation)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ragapp import warmup
from tests.ui.conftest import CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
]


@pytest.fixture
def warming():
    warmup._reset()
    with warmup._lock:
        warmup._state["status"] = warmup.WARMING
        warmup._state["loading"] = "minilm"
    yield
    warmup._reset()


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_hit_test_waits_for_the_models_then_searches(
    live_server, browser, csp_violations, make_user, make_kb, warming
):
    user = make_user("alice")
    kb = make_kb(user, "Manuals", embedders=[])  # keyword recall only: no model needed
    context = browser.new_context()
    violations = csp_violations(context)
    page = context.new_page()
    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-Test-1234")
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r"/kb/$"))

    page.goto(f"{live_server.url}/kb/{kb.pk}/hit-test/?q=backup")
    notice = page.locator("#warmup-notice")
    assert "Loading the models after a restart" in notice.inner_text()
    page.wait_for_function("() => document.getElementById('warmup-detail').textContent !== ''")
    assert "minilm" in page.inner_text("#warmup-detail")
    assert page.locator("#recall-list").count() == 0

    with warmup._lock:
        warmup._state["status"] = warmup.READY
    page.wait_for_selector("#recall-list", state="attached", timeout=20_000)
    assert page.locator("#warmup-notice").count() == 0
    assert page.input_value("#hit-q") == "backup"
    assert violations == []
    context.close()
