"""Share links: what an anonymous or logged-in visitor can reach, revocation, rate limits,
framing, and the owners' page. Runs with the "hash" embedder under RAG_TEST_FAST=1 (and with
the real ones under `make test`); without an LLM the answers are extracts."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from chat.models import Conversation, Message
from chat.selectors import conversations_for
from curation.models import ShareLink
from curation.sharing import (
    ShareLinkInvalid,
    clean_origins,
    share_link_create,
    share_link_revoke,
)
from ingestion.models import Document
from ragapp.dashboard import dashboard_for
from tests.conftest import ingest_texts

pytestmark = pytest.mark.django_db

PUBLIC = {
    "backup.md": "# Backup\n\npg_dump writes a consistent backup of one PostgreSQL database "
    "as an SQL script. To restore it, feed the script to psql.",
    "vacuum.md": "# Vacuum\n\nVACUUM reclaims storage occupied by dead tuples.",
}
SECRET = {
    "salaries.md": "# Salaries\n\nThe backup administrator salary is 99000 zorkmids per year, "
    "paid for pg_dump backup duty.",
}
OTHER = {
    "other-backup.md": "# Backup elsewhere\n\npg_dump backup of a PostgreSQL database "
    "is described in the other handbook, with glorbnax tapes.",
}


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def kb(alice, make_kb):
    kb = ingest_texts(make_kb(alice, "handbook"), {**PUBLIC, **SECRET})
    Document.objects.filter(knowledge_base=kb, original_name="salaries.md").update(restricted=True)
    return kb


@pytest.fixture
def other_kb(alice, make_kb):
    return ingest_texts(make_kb(alice, "other"), OTHER)


def sse_events(response) -> list[tuple[str, dict]]:
    body = b"".join(response.streaming_content).decode()
    events = []
    for frame in body.split("\n\n"):
        lines = frame.strip().splitlines()
        kind = next((x[7:] for x in lines if x.startswith("event: ")), None)
        data = "".join(x[6:] for x in lines if x.startswith("data: "))
        if kind and data:
            events.append((kind, json.loads(data)))
    return events


def visitor_token_of(page) -> str:
    html = page.content.decode()
    return html.split('name="visitor" value="', 1)[1].split('"', 1)[0]


def ask(client, link, question, conversation=None, **headers):
    page = client.get(f"/s/{link.token}/")
    assert page.status_code == 200
    data = {"question": question, "visitor": visitor_token_of(page)}
    if conversation:
        data["conversation"] = conversation
    return client.post(f"/s/{link.token}/ask", data, **headers)


def test_anonymous_visitor_sees_only_unrestricted_documents_of_the_links_knowledge_bases(
    alice, kb, other_kb, client
):
    link = share_link_create(owner=alice, knowledge_bases=[kb], title="Help")
    response = ask(client, link, "How do I make a pg_dump backup of a database?")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    events = sse_events(response)
    done = dict(events)["done"]
    documents = {s["document"] for s in done["sources"]}
    assert documents and documents <= set(PUBLIC)  # not the restricted one, not other_kb's
    assert all("url" not in s and "document_id" not in s for s in done["sources"])
    assert "zorkmids" not in done["answer"] and "glorbnax" not in done["answer"]
    conversation = Conversation.objects.get(pk=done["conversation_id"])
    assert conversation.user is None and conversation.share_link == link and conversation.visitor
    assert list(conversation.knowledge_bases.all()) == [kb]
    # kept apart from the owner's own conversations, but counted in the dashboard
    assert not conversations_for(user=alice).exists()
    assert dashboard_for([kb]).questions == 1


def test_logged_in_user_on_an_open_link_still_asks_anonymously(alice, kb, client):
    link = share_link_create(owner=alice, knowledge_bases=[kb], title="Help")
    client.force_login(alice)  # the owner, who could read the restricted document
    done = dict(sse_events(ask(client, link, "backup administrator salary zorkmids")))["done"]
    assert "salaries.md" not in {s["document"] for s in done["sources"]}
    assert Conversation.objects.get(pk=done["conversation_id"]).user is None


def test_a_knowledge_base_no_longer_owned_drops_out_of_the_link(
    alice, kb, other_kb, make_user, client
):
    from curation.sharing import share_link_knowledge_bases

    link = share_link_create(owner=alice, knowledge_bases=[kb, other_kb], title="Both")
    carol = make_user("carol")
    other_kb.owner = carol
    other_kb.save()
    assert share_link_knowledge_bases(link) == [kb]
    assert client.get(f"/s/{link.token}/").status_code == 200
    kb.owner = carol
    kb.save()
    assert client.get(f"/s/{link.token}/").status_code == 404  # nothing left to answer from


def test_follow_up_continues_only_the_visitors_own_conversation(alice, kb, client):
    link = share_link_create(owner=alice, knowledge_bases=[kb], title="Help")
    first = dict(sse_events(ask(client, link, "How do I back up with pg_dump?")))["done"]
    again = dict(sse_events(ask(client, link, "and restore it?", first["conversation_id"])))
    assert again["done"]["conversation_id"] == first["conversation_id"]
    assert Message.objects.filter(conversation_id=first["conversation_id"]).count() == 4
    stranger = Client()
    response = ask(stranger, link, "and restore it?", first["conversation_id"])
    assert response.status_code == 404


def test_revoking_stops_the_page_widget_script_and_ask_at_once(alice, kb, client):
    link = share_link_create(owner=alice, knowledge_bases=[kb], title="Help")
    page = client.get(f"/s/{link.token}/")
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    assert client.get(f"/s/{link.token}/embed.js").status_code == 200
    token = visitor_token_of(page)
    share_link_revoke(share_link=link)
    for url in (f"/s/{link.token}/", f"/s/{link.token}/widget", f"/s/{link.token}/embed.js"):
        assert client.get(url).status_code == 404, url
    response = client.post(f"/s/{link.token}/ask", {"question": "pg_dump?", "visitor": token})
    assert response.status_code == 404
    assert client.get("/s/no-such-token/").status_code == 404


def test_rate_limit_per_visitor_answers_429_with_a_message(alice, kb, client):
    link = share_link_create(owner=alice, knowledge_bases=[kb], title="Help", rate_limit_per_hour=2)
    for _ in range(2):
        assert ask(client, link, "pg_dump backup?").status_code == 200
    limited = ask(client, link, "pg_dump backup?")
    assert limited.status_code == 429
    assert "Too many questions" in limited.json()["error"]
    # another visitor (a new cookie) from the same address still has their allowance
    assert ask(Client(), link, "pg_dump backup?").status_code == 200


def test_rate_limit_per_address_catches_a_visitor_who_drops_the_cookie(alice, kb, settings):
    settings.RAG_SHARE_IP_FACTOR = 2
    link = share_link_create(owner=alice, knowledge_bases=[kb], title="Help", rate_limit_per_hour=1)
    statuses = [ask(Client(), link, "pg_dump backup?").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_cross_origin_post_and_a_forged_visitor_token_are_refused(alice, kb, client):
    link = share_link_create(owner=alice, knowledge_bases=[kb], title="Help")
    evil = ask(client, link, "pg_dump?", HTTP_ORIGIN="https://evil.example")
    assert evil.status_code == 403
    forged = client.post(f"/s/{link.token}/ask", {"question": "pg_dump?", "visitor": "abc"})
    assert forged.status_code == 400
    other = share_link_create(owner=alice, knowledge_bases=[kb], title="Other")
    token = visitor_token_of(client.get(f"/s/{other.token}/"))
    wrong_link = client.post(f"/s/{link.token}/ask", {"question": "pg_dump?", "visitor": token})
    assert wrong_link.status_code == 400


def test_login_required_link_redirects_to_login_and_asks_as_the_user(alice, kb, make_user):
    bob = make_user("bob")
    link = share_link_create(owner=alice, knowledge_bases=[kb], title="Staff", login_required=True)
    client = Client(enforce_csrf_checks=True)
    page = client.get(f"/s/{link.token}/")
    assert page.status_code == 302
    assert page["Location"] == f"/accounts/login/?next=/s/{link.token}/"
    client.force_login(bob)
    page = client.get(f"/s/{link.token}/")
    assert page.status_code == 200
    data = {"question": "pg_dump backup?", "visitor": visitor_token_of(page)}
    assert client.post(f"/s/{link.token}/ask", data).status_code == 403  # no CSRF token
    csrf = client.cookies["csrftoken"].value
    response = client.post(f"/s/{link.token}/ask", data, HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200
    done = dict(sse_events(response))["done"]
    conversation = Conversation.objects.get(pk=done["conversation_id"])
    assert conversation.user == bob and conversation.share_link == link
    assert not conversations_for(user=bob).exists()  # not in bob's own chat list
    assert Client().get(f"/s/{link.token}/widget").status_code == 200  # shows "log in"
    # bob's 👍 is his, as an account's (CSRF checked as for asking).
    vote = {"visitor": data["visitor"], "message": done["message_id"], "rating": "1"}
    assert client.post(f"/s/{link.token}/feedback", vote).status_code == 403
    assert client.post(f"/s/{link.token}/feedback", vote, HTTP_X_CSRFTOKEN=csrf).status_code == 200
    assert conversation.messages.get(role="assistant").feedback.get().user == bob


def test_only_the_widget_may_be_framed_and_only_by_allowed_origins(alice, kb, client):
    link = share_link_create(
        owner=alice,
        knowledge_bases=[kb],
        title="Help",
        allowed_origins=["https://www.example.com/", "http://127.0.0.1:8123"],
    )
    widget = client.get(f"/s/{link.token}/widget")
    assert widget.status_code == 200
    assert "X-Frame-Options" not in widget
    policy = widget["Content-Security-Policy"]
    assert "frame-ancestors 'self' https://www.example.com http://127.0.0.1:8123" in policy
    assert "script-src 'self'" in policy  # the rest of the site's policy stays
    page = client.get(f"/s/{link.token}/")
    assert page["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'self'" in page["Content-Security-Policy"]
    assert "example.com" not in page["Content-Security-Policy"]


def test_origins_must_be_plain_origins():
    assert clean_origins(
        [" HTTPS://Example.com/ ", "", "http://a.test:8080", "https://*.b.test"]
    ) == [
        "https://example.com",
        "http://a.test:8080",
        "https://*.b.test",
    ]
    for bad in (
        "example.com",
        "https://example.com/path",
        "javascript:alert(1)",
        "https://a.test; script-src *",
        "https://a.test;script-src",
        "https://a.test,https://b.test",
        "https://user@a.test",
        "https://a.test:99999",
    ):
        with pytest.raises(ShareLinkInvalid):
            clean_origins([bad])


def test_only_owned_knowledge_bases_can_be_shared(alice, kb, make_user, make_kb):
    from ingestion.models import Membership, Role

    bob = make_user("bob")
    Membership.objects.create(knowledge_base=kb, user=bob, role=Role.EDITOR)
    with pytest.raises(ShareLinkInvalid):
        share_link_create(owner=bob, knowledge_bases=[kb], title="Mine now")
    assert not ShareLink.objects.exists()


def test_owner_page_creates_lists_and_revokes(alice, kb, other_kb, client):
    client.force_login(alice)
    page = client.get(f"/kb/{kb.pk}/share/")
    assert page.status_code == 200
    response = client.post(
        f"/kb/{kb.pk}/share/",
        {
            "title": "Support bot",
            "welcome_message": "Hello!",
            "suggested_questions": "How do I back up?\n\nWhat is VACUUM?",
            "allowed_origins": "https://shop.example.com",
            "rate_limit_per_hour": "5",
            "knowledge_bases": [str(other_kb.pk)],
        },
    )
    assert response.status_code == 302
    link = ShareLink.objects.get()
    assert link.suggested_questions == ["How do I back up?", "What is VACUUM?"]
    assert link.allowed_origins == ["https://shop.example.com"]
    assert link.rate_limit_per_hour == 5
    assert set(link.knowledge_bases.all()) == {kb, other_kb}
    html = client.get(f"/kb/{kb.pk}/share/").content.decode()
    assert f"http://testserver/s/{link.token}/" in html
    assert f"http://testserver/s/{link.token}/embed.js" in html
    bad = client.post(f"/kb/{kb.pk}/share/", {"title": "x", "allowed_origins": "not an origin"})
    assert bad.status_code == 400
    client.post(f"/kb/{kb.pk}/share/{link.pk}/revoke")
    link.refresh_from_db()
    assert link.revoked_at is not None


def test_members_cannot_manage_share_links(alice, kb, make_user):
    from ingestion.models import Membership, Role

    bob = make_user("bob")
    Membership.objects.create(knowledge_base=kb, user=bob, role=Role.EDITOR)
    link = share_link_create(owner=alice, knowledge_bases=[kb], title="Help")
    client = Client()
    client.force_login(bob)
    assert client.get(f"/kb/{kb.pk}/share/").status_code == 403
    assert client.post(f"/kb/{kb.pk}/share/{link.pk}/revoke").status_code == 403
    link.refresh_from_db()
    assert link.revoked_at is None


def test_dashboard_counts_share_link_questions_and_visitors(alice, kb, client):
    link = share_link_create(owner=alice, knowledge_bases=[kb], title="Help")
    for visitor in (client, client, Client()):
        assert dict(sse_events(ask(visitor, link, "pg_dump backup?")))["done"]
    dashboard = dashboard_for([kb])
    assert dashboard.questions == 3 and dashboard.visitors == 2
    client.force_login(alice)
    html = client.get(f"/kb/{kb.pk}/dashboard/").content.decode()
    assert 'id="stat-visitors">2<' in html


def rate(client, link, message_id, rating, token=None, **headers):
    token = token or visitor_token_of(client.get(f"/s/{link.token}/"))
    data = {"visitor": token, "message": message_id, "rating": rating}
    return client.post(f"/s/{link.token}/feedback", data, **headers)


def test_visitors_rate_their_own_answers_which_count_but_never_train(alice, kb, client):
    from chat.models import Feedback
    from chat.selectors import feedback_for_training

    link = share_link_create(owner=alice, knowledge_bases=[kb], title="Help")
    done = dict(sse_events(ask(client, link, "How do I make a pg_dump backup?")))["done"]
    answer = done["message_id"]  # the answer's id comes with it, for the 👍/👎
    assert Message.objects.get(pk=answer).role == "assistant"

    assert rate(client, link, answer, "-1").json() == {"ok": True, "rating": -1}
    assert rate(client, link, answer, "1").status_code == 200  # changes it, no second row
    (feedback,) = Feedback.objects.filter(message_id=answer)
    assert feedback.rating == 1 and feedback.user is None and feedback.visitor
    assert feedback.visitor == Conversation.objects.get(pk=done["conversation_id"]).visitor
    assert feedback_for_training(knowledge_base=kb) == []  # the public steers no ranking

    # Another visitor, another link's token, another origin, a bad rating: refused.
    assert rate(Client(), link, answer, "1").status_code == 404
    assert rate(client, link, answer, "1", HTTP_ORIGIN="https://evil.example").status_code == 403
    assert rate(client, link, answer, "5").status_code == 400
    question = Message.objects.get(conversation_id=done["conversation_id"], role="user")
    assert rate(client, link, question.pk, "1").status_code == 404  # only answers
    other = share_link_create(owner=alice, knowledge_bases=[kb], title="Other")
    assert rate(client, other, answer, "1").status_code == 404
    assert Feedback.objects.filter(message_id=answer).count() == 1
    token = visitor_token_of(client.get(f"/s/{link.token}/"))
    share_link_revoke(share_link=link)
    assert rate(client, link, answer, "-1", token=token).status_code == 404
