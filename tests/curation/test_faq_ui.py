""" "Save as FAQ" under a chat answer in headless Chromium (strict CSP): an editor corrects the
answer in the small form, saves it, and the same question then gets the saved answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from chat.models import Conversation, Message, Mode
from curation.models import FaqEntry
from tests.ui.conftest import CHROMIUM, browser, csp_violations  # noqa: F401 - fixtures
from tests.ui.test_chat_ui import log_in, shoot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_save_as_faq_from_the_chat_then_answered_from_it(
    live_server,
    browser,  # noqa: F811 - the fixtures imported above
    csp_violations,  # noqa: F811
    make_user,
    make_kb,
    settings,  # noqa: F811
):
    settings.OPENAI_BASE_URL = ""
    alice = make_user("alice")
    kb = make_kb(alice, "Helpdesk")
    conversation = Conversation.objects.create(user=alice, title="How do I reset my password?")
    conversation.knowledge_bases.set([kb])
    Message.objects.create(
        conversation=conversation, role="user", content="How do I reset my password?"
    )
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        question="How do I reset my password?",
        content="Your documents do not seem to contain the answer.",
        mode=Mode.ABSTAINED,
    )

    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    log_in(page, live_server.url, "alice")
    page.goto(f"{live_server.url}/chat/{conversation.pk}/")
    page.click(".msg.assistant button.save-faq")
    form = page.locator(".msg.assistant form.faq-form")
    assert form.locator("input[name=question]").input_value() == "How do I reset my password?"
    form.locator("textarea[name=answer]").fill("Click Forgot password on the login page.")
    shoot(page, "faq-save-form")  # and no sideways scrolling at 390 px
    form.locator("button[type=submit]").click()
    page.wait_for_selector(".msg.assistant .faq-saved")
    entry = FaqEntry.objects.get()
    assert entry.answer == "Click Forgot password on the login page."
    assert entry.knowledge_base == kb and entry.source_message.mode == Mode.ABSTAINED

    page.fill("textarea[name=question]", "how do I reset my password")
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg.assistant.faq .actions")
    answer = page.locator(".msg.assistant.faq")
    assert "Click Forgot password" in answer.locator(".answer").inner_text()
    assert "FAQ" in answer.locator(".status").inner_text()
    shoot(page, "faq-answer")
    assert not errors and not violations
