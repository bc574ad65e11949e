"""The owner's curation pages in headless Chromium (strict CSP): FAQ, knowledge gaps, test
cases with their chart, the threshold proposal, share links and the public share page, in
English and Chinese. Each page is shot at 1280 and 390 px (var/screenshots/curation-*.png)
and must not scroll sideways on a phone."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat.models import Conversation, Message, Mode
from curation.cases import case_save, regression_run
from curation.faq import faq_add
from curation.models import RegressionRun
from curation.sharing import share_link_create
from tests.ui.conftest import CHROMIUM, browser, csp_violations  # noqa: F401 - fixtures
from tests.ui.test_chat_ui import log_in, shoot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.models,  # FAQ entries and gaps are embedded with the real models
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
]


def _abstained(kb, user, question: str) -> None:
    conversation = Conversation.objects.create(user=user, title=question)
    conversation.knowledge_bases.set([kb])
    Message.objects.create(conversation=conversation, role="user", content=question)
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        question=question,
        content="Your documents do not seem to contain the answer.",
        mode=Mode.ABSTAINED,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(400)
def test_curation_pages_render_in_both_languages_without_csp_violations(
    live_server,
    browser,  # noqa: F811 - the fixtures imported above
    csp_violations,  # noqa: F811
    make_user,
    make_kb,
    settings,
):
    settings.OPENAI_BASE_URL = ""
    alice = make_user("alice")
    kb = make_kb(alice, "Helpdesk")
    reset = faq_add(
        knowledge_base=kb,
        question="How do I reset my password?",
        answer="Click **Forgot password** on the login page.",
        user=alice,
    )
    faq_add(knowledge_base=kb, question="如何导出笔记？", answer="在菜单中选择“导出”。", user=alice)
    for question in (
        "Can I pay by invoice?",
        "Is paying by invoice possible?",
        "What is the refund policy for annual plans?",
        "可以开发票吗？",
    ):
        _abstained(kb, alice, question)
    case_save(knowledge_base=kb, query="forgot my password", chunk_ids=[reset.chunk_id], user=alice)
    for _ in range(2):
        run = regression_run(knowledge_base=kb, trigger=RegressionRun.Trigger.MANUAL)
        assert run.status == RegressionRun.Status.DONE, run.error
    link = share_link_create(
        owner=alice,
        knowledge_bases=[kb],
        title="Helpdesk assistant",
        welcome_message="Ask about your account.",
        suggested_questions=["How do I reset my password?"],
    )

    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    url = live_server.url
    log_in(page, url, "alice")
    pages = {
        "faq": f"/kb/{kb.pk}/faqs/",
        "gaps": f"/kb/{kb.pk}/gaps/",
        "cases": f"/kb/{kb.pk}/cases/",
        "thresholds": f"/kb/{kb.pk}/cases/thresholds",
        "share-links": f"/kb/{kb.pk}/share/",
        "dashboard": f"/kb/{kb.pk}/dashboard/",
    }
    for name, path in pages.items():
        page.goto(url + path)
        assert page.locator("h1").count(), name
        shoot(page, f"curation-{name}")
    page.goto(url + f"/kb/{kb.pk}/faqs/")
    assert "How do I reset my password?" in page.content()
    page.goto(url + f"/kb/{kb.pk}/gaps/")
    assert "invoice" in page.content()

    # Chinese: the same pages, translated.
    page.goto(url + f"/kb/{kb.pk}/faqs/")
    page.click("button[name=language][value=zh-hans]")
    page.wait_for_load_state()
    for name, path in pages.items():
        page.goto(url + path)
        shoot(page, f"curation-{name}-zh")
    page.goto(url + f"/kb/{kb.pk}/gaps/")
    assert "知识缺口" in page.content() or "缺口" in page.content()

    # The public page a visitor sees (a new context: no account).
    visitor = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    violations += csp_violations(visitor)
    public = visitor.new_page()
    public.on("pageerror", lambda e: errors.append(str(e)))
    public.goto(f"{url}/s/{link.token}/")
    assert "Helpdesk assistant" in public.content()
    shoot(public, "curation-share-page")
    assert not errors, errors
    assert not violations, violations
