"""POST/GET /api/v1/knowledge-bases/{id}/share-links and DELETE /api/v1/share-links/{id}."""

from __future__ import annotations

import pytest

from curation.models import ShareLink
from ingestion.models import Membership, Role
from ragapp.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_user):
    return make_user("alice")


def auth(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user, 'test')[1]}"}


def post(client, path, data, headers):
    return client.post("/api/v1" + path, data, content_type="application/json", **headers)


def test_create_list_and_revoke(client, alice, make_kb):
    kb, second = make_kb(alice, "handbook"), make_kb(alice, "faq")
    headers = auth(alice)
    response = post(
        client,
        f"/knowledge-bases/{kb.pk}/share-links",
        {
            "title": "Help",
            "login_required": False,
            "welcome_message": "Hi",
            "suggested_questions": ["How do I back up?"],
            "allowed_origins": ["https://shop.example.com"],
            "rate_limit_per_hour": 12,
            "knowledge_base_ids": [second.pk],
        },
        headers,
    )
    assert response.status_code == 201, response.content
    body = response.json()
    link = ShareLink.objects.get(pk=body["id"])
    assert body == {"id": link.pk, "url": f"http://testserver/s/{link.token}/"}
    assert set(link.knowledge_bases.all()) == {kb, second}
    assert link.rate_limit_per_hour == 12 and link.allowed_origins == ["https://shop.example.com"]

    minimal = post(
        client,
        f"/knowledge-bases/{kb.pk}/share-links",
        {"title": "Staff", "login_required": True},
        headers,
    )
    assert minimal.status_code == 201
    listed = client.get(f"/api/v1/knowledge-bases/{kb.pk}/share-links", **headers).json()
    assert [x["title"] for x in listed] == ["Staff", "Help"]
    assert listed[0]["login_required"] is True and listed[0]["revoked_at"] is None
    assert listed[1]["embed_url"] == f"http://testserver/s/{link.token}/embed.js"

    assert client.delete(f"/api/v1/share-links/{link.pk}", **headers).status_code == 204
    link.refresh_from_db()
    assert link.revoked_at is not None
    assert client.get(body["url"]).status_code == 404


def test_refusals(client, alice, make_user, make_kb):
    kb = make_kb(alice, "handbook")
    bob = make_user("bob")
    bobs = make_kb(bob, "bob's")
    Membership.objects.create(knowledge_base=kb, user=bob, role=Role.EDITOR)
    path = f"/knowledge-bases/{kb.pk}/share-links"
    # a member who does not own it: 403; a stranger: 404
    assert post(client, path, {"title": "x"}, auth(bob)).status_code == 403
    assert post(client, path, {"title": "x"}, auth(make_user("eve"))).status_code == 404
    # another owner's knowledge base cannot ride along
    extra = {"title": "x", "knowledge_base_ids": [bobs.pk]}
    assert post(client, path, extra, auth(alice)).status_code == 404
    bad_origin = {"title": "x", "allowed_origins": ["https://a.test/path"]}
    assert post(client, path, bad_origin, auth(alice)).status_code == 400
    assert post(client, path, {"title": ""}, auth(alice)).status_code == 422
    assert not ShareLink.objects.exists()
    link = ShareLink.objects.create(owner=alice, token="t" * 32, title="Help")
    link.knowledge_bases.set([kb])
    stranger = auth(make_user("mallory"))
    assert client.delete(f"/api/v1/share-links/{link.pk}", **stranger).status_code == 404
    link.refresh_from_db()
    assert link.revoked_at is None
