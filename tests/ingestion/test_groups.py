"""Groups: staff create them and add users; a knowledge base gives a role to a group as to a
user, and a user's role is the highest any of these grants. Leaving a group takes effect on
the next request."""

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from ingestion.models import GroupMembership, KnowledgeBase, Membership, Role
from ingestion.selectors import knowledge_bases_for, readable_knowledge_bases
from ragapp.models import ApiToken

pytestmark = pytest.mark.django_db


class Api:
    def __init__(self, client, user):
        self.client = client
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user, 't')[1]}"}

    def get(self, path):
        return self.client.get("/api/v1" + path, **self.headers)

    def post(self, path, data=None):
        return self.client.post(
            "/api/v1" + path, data, content_type="application/json", **self.headers
        )

    def upload(self, path, name):
        files = [SimpleUploadedFile(name, b"alpha beta")]
        return self.client.post("/api/v1" + path, {"files": files}, **self.headers)

    def delete(self, path):
        return self.client.delete("/api/v1" + path, **self.headers)


@pytest.fixture
def setup(make_user, make_kb):
    owner, gina = make_user("owner"), make_user("gina")
    kb = make_kb(owner, "manuals")
    team = Group.objects.create(name="team")
    gina.groups.add(team)
    return owner, gina, kb, team


def grant(kb, group, role):
    return GroupMembership.objects.create(knowledge_base=kb, group=group, role=role)


def test_role_is_the_highest_of_the_users_and_the_groups_grants(setup):
    owner, gina, kb, team = setup
    assert kb.role_of(gina) is None
    grant(kb, team, Role.VIEWER)
    assert kb.role_of(gina) == Role.VIEWER
    Membership.objects.create(knowledge_base=kb, user=gina, role=Role.EDITOR)
    assert kb.role_of(gina) == Role.EDITOR
    # A second group with a higher role wins over both.
    admins = Group.objects.create(name="admins")
    gina.groups.add(admins)
    grant(kb, admins, Role.OWNER)
    assert kb.role_of(gina) == Role.OWNER
    assert list(KnowledgeBase.objects.owned_by(gina)) == [kb]
    # A group's lower role never lowers the user's own.
    gina.groups.remove(admins)
    GroupMembership.objects.filter(group=team).update(role=Role.VIEWER)
    assert kb.role_of(gina) == Role.EDITOR
    assert list(KnowledgeBase.objects.editable_by(gina)) == [kb]
    assert kb.role_of(owner) == Role.OWNER


def test_querysets_are_one_query_and_list_each_knowledge_base_once(setup, make_user):
    owner, gina, kb, team = setup
    other = Group.objects.create(name="other")
    gina.groups.add(other)
    grant(kb, team, Role.VIEWER)
    grant(kb, other, Role.EDITOR)
    Membership.objects.create(knowledge_base=kb, user=gina, role=Role.VIEWER)
    Membership.objects.create(knowledge_base=kb, user=make_user("someone"), role=Role.VIEWER)
    with CaptureQueriesContext(connection) as queries:
        readable = list(KnowledgeBase.objects.readable_by(gina))
        editable = list(KnowledgeBase.objects.editable_by(gina))
        owned = list(KnowledgeBase.objects.owned_by(gina))
    assert (readable, editable, owned) == ([kb], [kb], [])
    assert len(queries) == 3
    with CaptureQueriesContext(connection) as queries:
        assert kb.role_of(gina) == Role.EDITOR
    assert len(queries) == 1


def test_group_viewer_reads_but_does_not_write(setup, client):
    owner, gina, kb, team = setup
    grant(kb, team, Role.VIEWER)
    assert list(knowledge_bases_for(user=gina)) == [kb]
    assert list(knowledge_bases_for(user=gina, write=True)) == []
    assert readable_knowledge_bases(user=gina, ids=[kb.pk]) == [kb]
    client.force_login(gina)
    assert client.get(reverse("kb_detail", args=[kb.pk])).status_code == 200
    api = Api(client, gina)
    response = api.get(f"/knowledge-bases/{kb.pk}")
    assert response.status_code == 200 and response.json()["role"] == "viewer"
    assert [k["id"] for k in api.get("/knowledge-bases").json()] == [kb.pk]
    upload = api.upload(f"/knowledge-bases/{kb.pk}/documents", "a.txt")
    assert upload.status_code == 404
    assert kb.documents.count() == 0


def test_group_editor_uploads_through_the_api(setup, client):
    owner, gina, kb, team = setup
    grant(kb, team, Role.EDITOR)
    api = Api(client, gina)
    upload = api.upload(f"/knowledge-bases/{kb.pk}/documents", "a.txt")
    assert upload.status_code == 201
    assert [d["name"] for d in upload.json()["accepted"]] == ["a.txt"]
    # Editing is not owning: the members are the owner's to change.
    body = {"username": "owner", "role": "viewer"}
    assert api.post(f"/knowledge-bases/{kb.pk}/members", body).status_code == 403


def test_leaving_the_group_takes_effect_on_the_next_request(setup, client, make_user):
    owner, gina, kb, team = setup
    grant(kb, team, Role.VIEWER)
    staff = make_user("staff", is_staff=True)
    client.force_login(gina)
    api = Api(Client(), gina)
    assert client.get(reverse("kb_detail", args=[kb.pk])).status_code == 200
    assert api.get(f"/knowledge-bases/{kb.pk}").status_code == 200
    removed = Api(Client(), staff).delete(f"/groups/{team.pk}/members/gina")
    assert removed.status_code == 204
    assert client.get(reverse("kb_detail", args=[kb.pk])).status_code == 404
    assert api.get(f"/knowledge-bases/{kb.pk}").status_code == 404
    assert api.post("/search", {"knowledge_bases": [kb.pk], "query": "x"}).status_code == 404
    assert list(knowledge_bases_for(user=gina)) == []


def test_only_staff_create_groups_and_manage_their_members(setup, client, make_user):
    owner, gina, kb, team = setup
    staff = Api(Client(), make_user("staff", is_staff=True))
    plain = Api(Client(), owner)
    refused = plain.post("/groups", {"name": "mine"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert not Group.objects.filter(name="mine").exists()
    # The same answer whether or not the group exists: nothing about groups leaks.
    assert plain.post(f"/groups/{team.pk}/members", {"username": "owner"}).status_code == 403
    assert plain.post("/groups/999999/members", {"username": "owner"}).status_code == 403
    assert plain.delete(f"/groups/{team.pk}/members/gina").status_code == 403
    assert team.user_set.filter(username="gina").exists()

    created = staff.post("/groups", {"name": "support"})
    assert created.status_code == 201
    support = Group.objects.get(name="support")
    assert created.json() == {"id": support.pk, "name": "support"}
    duplicate = staff.post("/groups", {"name": "support"})
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "conflict"
    assert staff.post("/groups", {}).status_code == 422
    assert staff.post("/groups", {"name": ""}).status_code == 422

    added = staff.post(f"/groups/{support.pk}/members", {"username": "owner"})
    assert added.status_code == 201
    assert added.json() == {"group": "support", "username": "owner"}
    assert staff.post(f"/groups/{support.pk}/members", {"username": "nobody"}).status_code == 400
    assert staff.post("/groups/999999/members", {"username": "owner"}).status_code == 404
    assert list(support.user_set.values_list("username", flat=True)) == ["owner"]
    assert staff.delete(f"/groups/{support.pk}/members/owner").status_code == 204
    assert staff.delete(f"/groups/{support.pk}/members/owner").status_code == 404
    assert staff.delete(f"/groups/{support.pk}/members/a%00b").status_code == 404
    assert not support.user_set.exists()


def test_members_endpoint_grants_groups_and_lists_them(setup, client, make_user):
    owner, gina, kb, team = setup
    api = Api(client, owner)
    url = f"/knowledge-bases/{kb.pk}/members"
    make_user("vera")
    assert api.post(url, {"username": "vera", "role": "editor"}).json() == {
        "username": "vera",
        "role": "editor",
    }
    response = api.post(url, {"group": "team", "role": "viewer"})
    assert response.status_code == 201
    assert response.json() == {"group": "team", "role": "viewer"}
    # Granting again changes the role.
    assert api.post(url, {"group": "team", "role": "editor"}).status_code == 201
    assert GroupMembership.objects.get(knowledge_base=kb, group=team).role == Role.EDITOR
    assert api.get(url).json() == [
        {"username": "owner", "role": "owner"},
        {"username": "vera", "role": "editor"},
        {"group": "team", "role": "editor"},
    ]
    # Exactly one of username and group.
    both = api.post(url, {"username": "vera", "group": "team", "role": "viewer"})
    assert both.status_code == 422 and both.json()["error"]["code"] == "invalid"
    assert api.post(url, {"role": "viewer"}).status_code == 422
    unknown = api.post(url, {"group": "nope", "role": "viewer"})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "bad_request"
    # A group member sees the groups too, but may not grant.
    member_api = Api(Client(), gina)
    assert {"group": "team", "role": "editor"} in member_api.get(url).json()
    assert member_api.post(url, {"group": "team", "role": "owner"}).status_code == 403
    # Taking the group's role away.
    assert api.delete(f"/knowledge-bases/{kb.pk}/groups/team").status_code == 204
    assert api.delete(f"/knowledge-bases/{kb.pk}/groups/team").status_code == 404
    assert member_api.get(url).status_code == 404


def test_owner_gives_a_group_a_role_on_the_members_page_and_removes_it(setup, make_user):
    owner, gina, kb, team = setup
    url = reverse("kb_members", args=[kb.pk])
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    page = client.get(url)
    html = page.content.decode()
    assert 'id="group-form"' in html and '<option value="team">team</option>' in html
    token = client.cookies["csrftoken"].value
    # Without the CSRF token the POST is refused.
    assert client.post(url, {"group-group": "team", "group-role": "viewer"}).status_code == 403
    assert not GroupMembership.objects.exists()
    response = client.post(
        url, {"group-group": "team", "group-role": "viewer", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    grant_ = GroupMembership.objects.get(knowledge_base=kb, group=team)
    assert grant_.role == Role.VIEWER
    invalid = client.post(
        url, {"group-group": "nope", "group-role": "viewer", "csrfmiddlewaretoken": token}
    )
    assert invalid.status_code == 200 and GroupMembership.objects.count() == 1

    # A member of the group sees it listed, without the form or the remove buttons.
    member = Client()
    member.force_login(gina)
    html = member.get(url).content.decode()
    assert 'id="group-members"' in html and "team" in html
    assert 'id="group-form"' not in html
    assert reverse("kb_group_remove", args=[kb.pk, grant_.pk]) not in html
    refused = member.post(url, {"group-group": "team", "group-role": "editor"})
    assert refused.status_code == 403
    assert member.post(reverse("kb_group_remove", args=[kb.pk, grant_.pk])).status_code == 403
    assert GroupMembership.objects.get(pk=grant_.pk).role == Role.VIEWER

    response = client.post(
        reverse("kb_group_remove", args=[kb.pk, grant_.pk]), {"csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert not GroupMembership.objects.exists()
    assert member.get(url).status_code == 404


def test_the_user_form_still_adds_users_beside_the_group_form(setup, client, make_user):
    owner, gina, kb, team = setup
    make_user("vera")
    client.force_login(owner)
    url = reverse("kb_members", args=[kb.pk])
    assert client.post(url, {"username": "vera", "role": "editor"}).status_code == 302
    assert Membership.objects.get(knowledge_base=kb, user__username="vera").role == Role.EDITOR
    assert not GroupMembership.objects.exists()


def test_staff_edit_groups_and_group_roles_in_the_admin(setup, admin_client):
    owner, gina, kb, team = setup
    grant(kb, team, Role.EDITOR)
    html = admin_client.get(reverse("admin:ingestion_knowledgebase_change", args=[kb.pk]))
    assert 'name="group_memberships-0-group"' in html.content.decode()
    html = admin_client.get(reverse("admin:ragapp_user_change", args=[gina.pk]))
    assert 'name="groups"' in html.content.decode()
    assert admin_client.get(reverse("admin:auth_group_changelist")).status_code == 200
