"""Every chat, search and API request resolves its knowledge bases through one selector,
and each keeps its own answer to an id the user may not read."""

import pytest

from ingestion.models import Membership, Role
from ingestion.selectors import readable_knowledge_bases
from ragapp.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(make_user, make_kb):
    alice, bob = make_user("alice"), make_user("bob")
    mine = make_kb(alice, "mine")
    shared = make_kb(bob, "shared")
    Membership.objects.create(knowledge_base=shared, user=alice, role=Role.VIEWER)
    private = make_kb(bob, "private")
    return alice, mine, shared, private


def test_selector_returns_readable_ones_or_none_when_any_is_not(setup):
    alice, mine, shared, private = setup
    assert readable_knowledge_bases(user=alice, ids=[mine.pk, shared.pk, mine.pk]) == [
        mine,
        shared,
    ]
    assert readable_knowledge_bases(user=alice, ids=[mine.pk, private.pk]) is None
    assert readable_knowledge_bases(user=alice, ids=[mine.pk, 10**9]) is None
    assert readable_knowledge_bases(user=alice, ids=[mine.pk, private.pk], partial=True) == [mine]
    assert readable_knowledge_bases(user=alice, ids=[]) == []


def test_api_search_and_openai_model_answer_404_for_one_unreadable_id(setup, client):
    alice, mine, shared, private = setup
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(alice, 't')[1]}"}
    body = {"query": "x", "knowledge_bases": [mine.pk, private.pk]}
    response = client.post("/api/v1/search", body, content_type="application/json", **bearer)
    assert response.status_code == 404
    body = {"question": "x", "knowledge_bases": [mine.pk, private.pk]}
    response = client.post("/api/v1/chat", body, content_type="application/json", **bearer)
    assert response.status_code == 404
    body = {
        "model": f"kb-{mine.pk}+kb-{private.pk}",
        "messages": [{"role": "user", "content": "x"}],
    }
    response = client.post("/v1/chat/completions", body, content_type="application/json", **bearer)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_web_chat_skips_unreadable_ids_and_refuses_when_none_is_left(setup, client):
    alice, mine, shared, private = setup
    client.force_login(alice)
    response = client.post("/chat/ask", {"question": "x", "kb": [private.pk, "abc"]})
    assert response.status_code == 400
    assert b"choose at least one knowledge base you can read" in response.content
