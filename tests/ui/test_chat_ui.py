"""The chat in headless Chromium against the live server and a local fake LLM: Markdown
answers rendered safely, stop, regenerate, edit and resend, sources, the sidebar, feedback,
the knowledge-base picker, and no sideways scrolling at 390 px. Screenshots land in
var/screenshots/chat-*.png."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from chat.fake_llm import FakeLLM
from tests.conftest import ROOT, ingest_texts
from tests.ui.conftest import CHROMIUM

SCREENSHOTS = ROOT / "var" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
]

DOCS = {
    "backup.md": "# Backup\n\npg_dump writes a consistent backup of one PostgreSQL database as "
    "an SQL script. To restore it, feed the script to psql.",
    "vacuum.md": "# Vacuum\n\nVACUUM reclaims storage occupied by dead tuples. Run it "
    "regularly, or let autovacuum do it.",
    "indexes.md": "# Indexes\n\nA B-tree index keeps keys sorted, which makes equality and "
    "range lookups fast.",
}

# What a model might write, including what a poisoned passage might make it write.
XSS = (
    '<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> '
    "[click me](javascript:window.__xss=3) ![pixel](https://attacker.example/leak.png)"
)


def markdown_answer(n: int) -> str:
    return (
        f"**Backups** are made with `pg_dump`, which writes an SQL script [{n}].\n\n"
        "Steps:\n\n"
        f"1. Run pg_dump against the database [{n}].\n"
        "2. Keep the script somewhere safe.\n\n"
        "```sh\npg_dump mydb > mydb.sql\n```\n\n"
        f"| Tool | Purpose |\n|---|---|\n| pg_dump | backup [{n}] |\n| psql | restore |\n\n"
        "It can also brew coffee.\n\n"
        f"{XSS}\n"
    )


def backup_passage(messages) -> int:
    prompt = messages[-1]["content"]
    return int(prompt.split('source="backup.md')[0].rsplit('<passage id="', 1)[1].split('"')[0])


def shoot(page, name: str) -> None:
    """Screenshots at 1280 and 390 px; at 390 the page must not scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    for width, height in ((1280, 800), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(80)
        if width == 390:
            assert_no_sideways_scroll(page, name)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
    page.set_viewport_size(original)


def assert_no_sideways_scroll(page, name: str) -> None:
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 1, f"{name}: the page scrolls sideways by {overflow}px"


def log_in(page, url: str, username: str) -> None:
    page.goto(url + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-Test-1234")
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r"/kb/$"))


def checked_kbs(page) -> set[str]:
    return set(
        page.eval_on_selector_all("input[name=kb]:checked", "els => els.map(e => e.dataset.name)")
    )


def wait_until(predicate, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def llm(settings):
    server = FakeLLM().start()
    settings.OPENAI_BASE_URL = server.base_url
    settings.OPENAI_API_KEY = "test-key"
    settings.RAG_LLM_MODEL = "test-model"
    settings.RAG_LLM_TIMEOUT = 10
    yield server
    server.stop()


@pytest.mark.models
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
def test_chat_stream_stop_regenerate_edit_sources_feedback(
    live_server, browser, csp_violations, llm, make_user, make_kb
):
    from chat.models import Conversation, Message, Mode
    from ingestion.models import Document, DocumentStatus

    alice = make_user("alice")
    make_kb(alice, "Drafts (empty)")  # sorts first, has no documents: never the default
    manuals = ingest_texts(make_kb(alice, "Manuals"), DOCS)
    notes = make_kb(alice, "Notes")
    Document.objects.create(
        knowledge_base=notes,
        original_name="n.md",
        content_hash="n" * 64,
        status=DocumentStatus.READY,
    )
    assert manuals.documents.filter(status=DocumentStatus.READY).count() == 3

    llm.reply = lambda messages: markdown_answer(backup_passage(messages)) + "filler " * 1000
    llm.token_delay = 0.03  # ~50 s in all: time to stop it, even on a loaded machine

    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    url = live_server.url
    log_in(page, url, "alice")

    # A first chat starts with a knowledge base that has documents; an empty one warns.
    page.goto(url + "/chat/")
    assert checked_kbs(page) == {"Manuals"}
    assert not page.is_visible("#kb-warning")
    page.check("input[data-name='Drafts (empty)']")
    assert "Drafts (empty)" in page.inner_text("#kb-warning")
    shoot(page, "chat-ui-kb-warning")
    page.uncheck("input[data-name='Drafts (empty)']")
    assert not page.is_visible("#kb-warning")
    page.check("input[data-name='Notes']")
    assert not page.is_visible("#stop") and page.is_enabled("#send")
    shoot(page, "chat-ui-empty")

    # Ask: Stop shows and Ask is disabled while it streams; the conversation is listed at once.
    page.fill("textarea[name=question]", "How do I back up a PostgreSQL database?")
    page.keyboard.press("Enter")
    page.wait_for_selector("#conversation-list li.current a")
    assert page.locator(".msg.assistant .actions").count() == 0  # still streaming
    conversation = Conversation.objects.get(user=alice)
    link = page.locator("#conversation-list li.current a")
    assert link.get_attribute("href") == f"/chat/{conversation.pk}/"
    assert link.inner_text().startswith("How do I back up")
    assert page.url == f"{url}/chat/{conversation.pk}/"
    assert page.is_visible("#stop") and page.is_disabled("#send")
    page.wait_for_selector(".msg.assistant .answer strong")
    page.wait_for_selector(".msg.assistant .answer table")  # re-rendered as tokens arrive
    assert page.locator(".msg.assistant .source-card").count() > 0
    shoot(page, "chat-ui-streaming")

    # Stop: labelled "stopped", not an error, and the sources stay.
    page.click("#stop")
    page.wait_for_selector(".msg.assistant.stopped .actions")
    assert not page.is_visible("#stop") and page.is_enabled("#send")
    assert "Stopped" in page.inner_text(".msg.assistant.stopped .status")
    assert page.locator(".msg.assistant.error").count() == 0
    assert page.locator(".msg.assistant.stopped .source-card").count() > 0
    assert llm.disconnected.wait(15)
    wait_until(lambda: Message.objects.filter(role="assistant", mode=Mode.STOPPED).exists())

    # ... also when the conversation is opened again.
    page.goto(f"{url}/chat/{conversation.pk}/")
    page.wait_for_selector(".msg.assistant.stopped .source-card")
    assert "Stopped" in page.inner_text(".msg.assistant.stopped .status")
    assert "**" not in page.inner_text(".msg.assistant .answer")
    shoot(page, "chat-ui-stopped")

    # Regenerate: the stopped answer and its question are replaced by a fresh, whole answer.
    llm.reply = lambda messages: markdown_answer(backup_passage(messages))
    llm.token_delay = 0
    page.click(".msg.assistant.stopped button.regenerate")
    page.wait_for_selector(".msg.assistant.generated .thumb")
    assert page.locator(".msg.assistant").count() == 1 and page.locator(".msg.user").count() == 1
    stored = list(conversation.messages.values_list("role", "mode"))
    assert stored == [("user", ""), ("assistant", Mode.GENERATED)]
    message = conversation.messages.get(role="assistant")

    # Markdown rendered, nothing the model wrote runs, links only http(s), no images.
    answer = page.locator(".msg.assistant .answer")
    for selector in ("strong", "ol li", "pre code", "table th", "code"):
        assert answer.locator(selector).count() >= 1, selector
    text = answer.inner_text()
    assert "**" not in text and "```" not in text and "|---" not in text
    assert answer.locator(".code-block button.code-copy").count() == 1
    assert '<img src=x onerror="window.__xss=1">' in text  # shown as text
    assert page.evaluate("window.__xss") is None
    assert page.locator("a[href^='javascript' i]").count() == 0
    assert answer.locator("img, script").count() == 0
    assert answer.locator("a.cite").count() >= 3
    # The unsupported sentence is marked where it stands; labels and steps are not claims.
    marks = answer.locator("mark.unsupported").all_inner_texts()
    assert any("brew coffee" in m for m in marks), marks
    assert not any("Steps" in m for m in marks), marks
    assert page.locator(".msg.assistant .unverified").inner_text() == ""

    # Sources: the cited one first and open, the rest behind "n more".
    n = next(s["n"] for s in message.sources if s["document"] == "backup.md")
    cards = page.locator(".msg.assistant .sources > .source-card")
    assert cards.count() == 1 and cards.first.inner_text().startswith(f"[{n}] backup.md")
    assert re.search(r"score \d\.\d{3}\b", cards.first.inner_text())
    rest = len(message.sources) - 1
    if rest:
        more = page.locator(".msg.assistant details.more-sources")
        label = "1 more source" if rest == 1 else f"{rest} more sources"
        assert more.locator("summary").inner_text() == label
        assert more.get_attribute("open") is None
    answer.locator("a.cite").first.click()
    assert "flash" in (page.get_attribute(f"#src-{message.pk}-{n}", "class") or "")
    shoot(page, "chat-ui-answer")

    # Feedback is there when the conversation is opened again.
    page.click(".msg.assistant .thumb >> nth=0")
    page.wait_for_selector(".msg.assistant .thumb.chosen")
    page.goto(f"{url}/chat/{conversation.pk}/")
    page.wait_for_selector(".msg.assistant .thumb.chosen[aria-pressed=true]")
    assert page.inner_text(".msg.assistant .thumb.chosen") == "👍"

    # Edit and resend: the question is replaced, and so is its answer.
    page.click(".msg.user button.edit")
    page.fill(".msg.user .editor textarea", "How do I restore a pg_dump backup?")
    page.click(".msg.user .editor button:has-text('Save and send')")
    page.wait_for_selector(".msg.user .bubble >> text=How do I restore")
    page.wait_for_selector("#messages:not(.busy) .msg.assistant.generated .thumb")
    assert page.locator(".msg.user .bubble").all_inner_texts() == [
        "How do I restore a pg_dump backup?"
    ]
    assert list(conversation.messages.filter(role="user").values_list("content", flat=True)) == [
        "How do I restore a pg_dump backup?"
    ]
    assert conversation.messages.count() == 2

    # Stop, then regenerate at once: the stopped answer is not saved into the new history.
    llm.reply = lambda messages: markdown_answer(backup_passage(messages)) + "filler " * 1000
    llm.token_delay = 0.03
    llm.disconnected.clear()
    page.click(".msg.assistant button.regenerate")
    page.wait_for_selector("#messages.busy .msg.assistant .answer strong")
    page.click("#stop")
    llm.reply = lambda messages: markdown_answer(backup_passage(messages))
    llm.token_delay = 0
    page.click(".msg.assistant.stopped button.regenerate")
    page.wait_for_selector("#messages:not(.busy) .msg.assistant.generated .thumb")
    assert llm.disconnected.wait(15)
    time.sleep(0.5)
    stored = list(conversation.messages.values_list("role", "mode", "content"))
    assert [(role, mode) for role, mode, _ in stored] == [("user", ""), ("assistant", "generated")]
    assert stored[0][2] == "How do I restore a pg_dump backup?"
    assert page.locator(".msg").count() == 2

    # A new chat remembers the knowledge bases of the last one.
    page.goto(url + "/chat/")
    assert checked_kbs(page) == {"Manuals", "Notes"}

    assert page.evaluate("window.__xss") is None
    assert not errors, errors
    assert not violations, violations
    context.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_narrow_screens_do_not_scroll_sideways(
    live_server, browser, csp_violations, make_user, make_kb
):
    from chat.models import Conversation, Message, Mode
    from ingestion.models import Document, DocumentStatus

    alice = make_user("alice")
    kb = make_kb(alice, "Manuals with a rather long name for a narrow screen")
    doc = Document.objects.create(
        knowledge_base=kb,
        original_name="backup.md",
        content_hash="b" * 64,
        status=DocumentStatus.READY,
    )
    conversation = Conversation.objects.create(user=alice, title="How do I back up?")
    conversation.knowledge_bases.set([kb])
    Message.objects.create(conversation=conversation, role="user", content="How do I back up?")
    source = {
        "n": 1,
        "chunk_id": 1,
        "document_id": doc.pk,
        "document": "backup.md",
        "page": None,
        "heading": "Backup",
        "sheet": None,
        "slide": None,
        "score": 0.91234,
        "recall_score": 0.5,
        "text": "pg_dump writes a consistent backup.",
        "url": f"/documents/{doc.pk}/view?chunk=1#chunk-1",
        "cited": True,
    }
    wide = "| " + " | ".join(f"column{i}" for i in range(12)) + " |\n"
    wide += "|" + "---|" * 12 + "\n" + "| " + " | ".join("x" * 12 for _ in range(12)) + " |\n"
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        mode=Mode.GENERATED,
        question="How do I back up?",
        content="Use **pg_dump** [1].\n\n```sh\n"
        + "pg_dump --very-long-option " * 8
        + "\n```\n\n"
        + wide
        + "\n"
        + "https://example.com/"
        + "a" * 120
        + "\n\n"
        + XSS,
        sources=[source, {**source, "n": 2, "cited": False, "score": 0.5}],
    )
    for i in range(5):
        Conversation.objects.create(user=alice, title=f"Older conversation {i}")

    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    violations = csp_violations(context)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    url = live_server.url
    log_in(page, url, "alice")
    page.goto(url + "/accounts/tokens/")
    page.fill("input[name=name]", "a token for the nightly export job with a long name")
    page.click("main button[type=submit]:has-text('Create token')")
    page.wait_for_selector("#new-token")
    assert page.is_visible("button:has-text('Revoke')")
    box = page.locator("button:has-text('Revoke')").bounding_box()
    assert box["x"] + box["width"] <= 390
    shoot(page, "chat-ui-tokens")

    for path in [
        "/chat/",
        "/kb/",
        f"/kb/{kb.pk}/",
        f"/kb/{kb.pk}/hit-test/",
        f"/kb/{kb.pk}/members/",
        f"/kb/{kb.pk}/settings/",
        f"/kb/{kb.pk}/dashboard/",
        f"/kb/{kb.pk}/reranker/",
        f"/documents/{doc.pk}/view",
        "/dashboard/",
        "/accounts/password_change/",
    ]:
        page.goto(url + path)
        assert_no_sideways_scroll(page, path)

    # The stored answer renders (safely) and fits; the conversation list is one tap away,
    # above the composer.
    page.goto(f"{url}/chat/{conversation.pk}/")
    page.wait_for_selector(".msg.assistant .answer pre")
    assert page.evaluate("window.__xss") is None
    assert page.locator("a[href^='javascript' i]").count() == 0
    assert page.locator(".msg.assistant .answer img").count() == 0
    assert page.inner_text(".msg.assistant details.more-sources summary") == "1 more source"
    assert page.locator(".msg.assistant .sources > .source-card").count() == 1
    assert_no_sideways_scroll(page, "conversation")
    assert not page.is_visible("#conversation-list")
    toggle = page.locator("#conv-toggle")
    assert toggle.is_visible()
    assert toggle.bounding_box()["y"] < page.locator("#ask-form").bounding_box()["y"]
    toggle.click()
    assert toggle.get_attribute("aria-expanded") == "true"
    listed = page.locator("#conversation-list li.current a")
    assert listed.is_visible()
    assert listed.bounding_box()["y"] < page.locator("#ask-form").bounding_box()["y"]
    assert_no_sideways_scroll(page, "conversation list")
    shoot(page, "chat-ui-conversation")
    page.set_viewport_size({"width": 1280, "height": 800})
    assert not toggle.is_visible() and page.is_visible("#conversation-list")

    assert not errors, errors
    assert not violations, violations
    context.close()
