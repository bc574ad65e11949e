"""The chat says how the settings of several chosen knowledge bases combine."""

import pytest

pytestmark = pytest.mark.django_db


def test_chat_page_carries_the_several_knowledge_bases_rule(client, make_user, make_kb):
    alice = make_user("alice")
    make_kb(alice, "one")
    make_kb(alice, "two")
    client.force_login(alice)
    page = client.get("/chat/").content.decode()
    # Hidden until a second knowledge base is ticked (static/js/chat.js, checkPicker).
    assert '<p id="kb-several" class="muted" hidden>' in page
    assert "Several knowledge bases: the largest recall k" in page
