"""The audit log: sign-ins, uploads, deletions, membership, settings and token changes are
recorded with who, what, when and from where; staff read, filter and export it; nothing in
the application changes or removes an entry."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from ingestion.models import Document, GroupMembership, Membership, Role
from ingestion.services import document_create
from ragapp.audit import audit_record, csv_safe
from ragapp.models import ApiToken, AuditEvent, AuditLogAppendOnly

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Test-1234"  # make_user's password
AGENT = "AuditTest/1.0"


@pytest.fixture(autouse=True)
def no_proxy(settings):
    settings.RAG_TRUSTED_PROXIES = 0


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def staff(make_user):
    return make_user("root", is_staff=True)


def browser(user, address="10.1.2.3") -> Client:
    client = Client(REMOTE_ADDR=address, HTTP_USER_AGENT=AGENT)
    client.force_login(user)
    return client


def bearer(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user, 't')[1]}"}


def last(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).latest("created_at", "id")


def add_document(kb, user, name="a.txt", body=b"alpha beta") -> Document:
    return document_create(
        knowledge_base=kb, fileobj=io.BytesIO(body), name=name, uploaded_by=user, enqueue=False
    ).document


# --- sign-ins --------------------------------------------------------------------------------


def test_login_is_recorded_with_address_and_user_agent(alice):
    client = Client()
    client.post(
        reverse("login"),
        {"username": "alice", "password": PASSWORD},
        REMOTE_ADDR="10.0.0.7",
        HTTP_USER_AGENT=AGENT,
    )
    event = last("login")
    assert (event.actor, event.actor_name, event.ip, event.user_agent) == (
        alice,
        "alice",
        "10.0.0.7",
        AGENT,
    )


def test_failed_login_records_the_attempted_username_not_the_password(alice):
    Client().post(
        reverse("login"),
        {"username": "alice", "password": "wrong-secret"},
        REMOTE_ADDR="10.0.0.8",
    )
    event = last("login_failed")
    assert event.actor is None
    assert event.details == {"username": "alice"}
    assert event.ip == "10.0.0.8"
    assert "wrong-secret" not in str(event.details)


def test_the_address_behind_a_trusted_proxy_is_the_forwarded_client(alice, settings):
    settings.RAG_TRUSTED_PROXIES = 1
    Client().post(
        reverse("login"),
        {"username": "alice", "password": PASSWORD},
        REMOTE_ADDR="172.16.0.1",
        HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5",
    )
    assert last("login").ip == "203.0.113.5"


def test_forwarded_header_is_ignored_without_a_trusted_proxy(alice):
    Client().post(
        reverse("login"),
        {"username": "alice", "password": PASSWORD},
        REMOTE_ADDR="172.16.0.1",
        HTTP_X_FORWARDED_FOR="203.0.113.5",
    )
    assert last("login").ip == "172.16.0.1"


def test_logout_is_recorded(alice):
    browser(alice).post(reverse("logout"))
    assert last("logout").actor == alice


def test_a_broken_audit_table_does_not_block_sign_in(alice, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise RuntimeError("audit storage down")

    monkeypatch.setattr(AuditEvent, "save", refuse)
    client = Client()
    client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert "_auth_user_id" in client.session


# --- documents and knowledge bases -----------------------------------------------------------


def test_web_upload_is_recorded(alice, make_kb):
    kb = make_kb(alice)
    browser(alice).post(
        reverse("kb_upload", args=[kb.pk]), {"files": [SimpleUploadedFile("notes.txt", b"hi")]}
    )
    event = last("document.upload")
    document = Document.objects.get(knowledge_base=kb)
    assert (event.actor, event.object_id, event.object_label, event.knowledge_base_id) == (
        alice,
        str(document.pk),
        "notes.txt",
        kb.pk,
    )
    assert event.object_type == "ingestion.document"
    assert event.ip == "10.1.2.3"


def test_api_upload_is_recorded(alice, make_kb, client):
    kb = make_kb(alice)
    response = client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/documents",
        {"files": [SimpleUploadedFile("api.txt", b"hello api")]},
        REMOTE_ADDR="10.9.9.9",
        **bearer(alice),
    )
    assert response.status_code == 201
    event = last("document.upload")
    assert (event.actor, event.object_label, event.ip) == (alice, "api.txt", "10.9.9.9")


def test_a_refused_duplicate_upload_records_nothing(alice, make_kb):
    kb = make_kb(alice)
    add_document(kb, alice, body=b"same")
    browser(alice).post(
        reverse("kb_upload", args=[kb.pk]), {"files": [SimpleUploadedFile("b.txt", b"same")]}
    )
    assert not AuditEvent.objects.filter(action="document.upload").exists()


def test_document_delete_is_recorded_web_and_api(alice, make_kb, client):
    kb = make_kb(alice)
    one, two = add_document(kb, alice, "one.txt", b"1"), add_document(kb, alice, "two.txt", b"2")
    browser(alice).post(reverse("document_delete", args=[one.pk]))
    client.delete(f"/api/v1/documents/{two.pk}", **bearer(alice))
    labels = set(
        AuditEvent.objects.filter(action="document.delete").values_list("object_label", flat=True)
    )
    assert labels == {"one.txt", "two.txt"}
    assert not Document.objects.filter(knowledge_base=kb).exists()


def test_metadata_changes_are_recorded_web_and_api_and_refusals_are_not(alice, make_kb, client):
    kb = make_kb(alice)
    document = add_document(kb, alice)
    browser(alice).post(
        reverse("document_metadata", args=[document.pk]), {"tags": "hr, 2024", "meta": "dept=hr"}
    )
    event = last("document.metadata")
    assert event.object_label == "a.txt" and event.actor == alice
    assert event.details == {"tags": ["hr", "2024"], "meta": {"dept": "hr"}}
    client.patch(
        f"/api/v1/documents/{document.pk}",
        {"meta": {"year": 2021}},
        content_type="application/json",
        **bearer(alice),
    )
    assert last("document.metadata").details["meta"] == {"year": 2021}
    refused = client.patch(
        f"/api/v1/documents/{document.pk}",
        {"meta": {"size": 3}},  # an automatic field's name
        content_type="application/json",
        **bearer(alice),
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid"
    assert AuditEvent.objects.filter(action="document.metadata").count() == 2


def test_knowledge_base_delete_is_recorded_and_the_history_survives(alice, make_kb):
    kb = make_kb(alice, name="Handbook")
    add_document(kb, alice)
    kb_id = kb.pk
    browser(alice).post(reverse("kb_delete", args=[kb_id]))
    event = last("knowledge_base.delete")
    assert (event.object_label, event.knowledge_base_id) == ("Handbook", kb_id)
    assert AuditEvent.objects.filter(knowledge_base_id=kb_id).count() == 1


def test_api_knowledge_base_delete_is_recorded(alice, make_kb, client):
    kb = make_kb(alice, name="Gone")
    client.delete(f"/api/v1/knowledge-bases/{kb.pk}", **bearer(alice))
    assert last("knowledge_base.delete").object_label == "Gone"


def test_settings_change_records_old_and_new_values(alice, make_kb):
    kb = make_kb(alice, name="Old name")
    browser(alice).post(
        reverse("kb_settings", args=[kb.pk]),
        {"name": "New name", "description": "", "abstain_threshold": ""},
    )
    event = last("knowledge_base.settings")
    assert event.details == {"changed": {"name": ["Old name", "New name"]}}
    assert event.knowledge_base_id == kb.pk


def test_thresholds_change_is_recorded(alice, make_kb):
    kb = make_kb(alice)
    browser(alice).post(
        reverse("kb_thresholds", args=[kb.pk]),
        {"rerank_top_k": "4", "rerank_min_score": "", "rerank_max_drop": ""},
    )
    assert last("knowledge_base.settings").details == {"changed": {"rerank_top_k": [None, 4]}}


def test_api_patch_records_only_the_fields_that_changed(alice, make_kb, client):
    kb = make_kb(alice, name="Same")
    client.patch(
        f"/api/v1/knowledge-bases/{kb.pk}",
        {"name": "Same", "description": "now described"},
        content_type="application/json",
        **bearer(alice),
    )
    assert last("knowledge_base.settings").details == {
        "changed": {"description": ["", "now described"]}
    }


def test_saving_unchanged_settings_records_nothing(alice, make_kb):
    kb = make_kb(alice, name="Same")
    browser(alice).post(
        reverse("kb_settings", args=[kb.pk]),
        {"name": "Same", "description": "", "abstain_threshold": ""},
    )
    assert not AuditEvent.objects.filter(action="knowledge_base.settings").exists()


# --- membership ------------------------------------------------------------------------------


def test_member_add_change_and_remove_on_the_web(alice, bob, make_kb):
    kb = make_kb(alice)
    web = browser(alice)
    web.post(reverse("kb_members", args=[kb.pk]), {"username": "bob", "role": Role.VIEWER})
    web.post(reverse("kb_members", args=[kb.pk]), {"username": "bob", "role": Role.EDITOR})
    membership = Membership.objects.get(knowledge_base=kb, user=bob)
    web.post(reverse("kb_member_remove", args=[kb.pk, membership.pk]))
    events = list(
        AuditEvent.objects.filter(knowledge_base_id=kb.pk)
        .order_by("id")
        .values_list("action", "object_label", "details")
    )
    assert events == [
        ("member.add", "bob", {"role": "viewer"}),
        ("member.change", "bob", {"role": ["viewer", "editor"]}),
        ("member.remove", "bob", {"role": "editor"}),
    ]
    assert last("member.remove").actor == alice


def test_member_add_change_and_remove_through_the_api(alice, bob, make_kb, client):
    kb = make_kb(alice)
    auth = bearer(alice)
    url = f"/api/v1/knowledge-bases/{kb.pk}/members"
    for role in (Role.VIEWER, Role.VIEWER, Role.EDITOR):
        client.post(url, {"username": "bob", "role": role}, "application/json", **auth)
    client.delete(f"{url}/bob", **auth)
    actions = list(
        AuditEvent.objects.filter(knowledge_base_id=kb.pk).order_by("id").values_list("action")
    )
    # Giving the same role again changes nothing, so nothing is recorded for it.
    assert actions == [("member.add",), ("member.change",), ("member.remove",)]


def test_group_grants_are_recorded(alice, make_kb, client):
    kb = make_kb(alice)
    Group.objects.create(name="support")
    auth = bearer(alice)
    url = f"/api/v1/knowledge-bases/{kb.pk}/members"
    client.post(url, {"group": "support", "role": Role.VIEWER}, "application/json", **auth)
    assert GroupMembership.objects.filter(knowledge_base=kb).exists()
    client.delete(f"/api/v1/knowledge-bases/{kb.pk}/groups/support", **auth)
    rows = list(
        AuditEvent.objects.filter(knowledge_base_id=kb.pk)
        .order_by("id")
        .values_list("action", "object_type", "object_label")
    )
    assert rows == [
        ("member.add", "auth.group", "support"),
        ("member.remove", "auth.group", "support"),
    ]


# --- tokens ----------------------------------------------------------------------------------


def test_token_create_and_revoke_are_recorded(alice):
    web = browser(alice)
    web.post(reverse("api_tokens"), {"name": "laptop"})
    token = ApiToken.objects.get(user=alice, name="laptop")
    web.post(reverse("api_tokens"), {"revoke": str(token.pk)})
    created, revoked = last("token.create"), last("token.revoke")
    assert created.object_id == revoked.object_id == str(token.pk)
    assert (created.actor, revoked.actor, revoked.ip) == (alice, alice, "10.1.2.3")
    assert token.key_prefix in created.object_label


def test_revoking_someone_elses_token_records_nothing(alice, bob):
    token, _raw = ApiToken.issue(bob, "bob's")
    browser(alice).post(reverse("api_tokens"), {"revoke": str(token.pk)})
    assert not AuditEvent.objects.filter(action="token.revoke").exists()


def test_token_created_on_the_command_line_is_recorded(alice):
    call_command("api_token", "alice", stdout=io.StringIO())
    event = last("token.create")
    assert event.details == {"via": "manage.py"}
    assert event.ip is None


# --- the staff page --------------------------------------------------------------------------


def test_only_staff_see_the_audit_log(alice, staff, client):
    assert browser(alice).get(reverse("audit_log")).status_code == 404
    assert browser(alice).get(reverse("audit_export")).status_code == 404
    assert client.get(reverse("audit_log")).status_code == 302  # to the login page
    page = browser(staff).get(reverse("audit_log"))
    assert page.status_code == 200
    assert reverse("audit_log").encode() in page.content  # the header links it for staff
    assert reverse("audit_log").encode() not in browser(alice).get(reverse("kb_list")).content


def _events(alice, bob):
    audit_record(actor=alice, action="token.create", knowledge_base=1)
    audit_record(actor=bob, action="token.create", knowledge_base=2)
    audit_record(actor=alice, action="logout")
    old = AuditEvent(actor_name="carol", action="logout")
    old.created_at = timezone.now() - timedelta(days=10)
    old.save()


def test_filters_select_events(alice, bob, staff):
    _events(alice, bob)
    web = browser(staff)

    def shown(**query):
        page = web.get(reverse("audit_log"), query)
        return [(e.actor_name, e.action) for e in page.context["page"]]

    assert shown(action="token.create") == [("bob", "token.create"), ("alice", "token.create")]
    assert shown(user="ALICE") == [("alice", "logout"), ("alice", "token.create")]
    assert shown(knowledge_base="2") == [("bob", "token.create")]
    today = timezone.localdate()
    assert ("carol", "logout") not in shown(date_from=today.isoformat())
    assert shown(date_to=(today - timedelta(days=5)).isoformat()) == [("carol", "logout")]
    # A filter that does not parse is ignored (the others still apply), not an error page.
    assert shown(knowledge_base="x", user="bob") == [("bob", "token.create")]


def test_pagination_keeps_the_filters(alice, staff):
    for _ in range(55):
        audit_record(actor=alice, action="logout")
    page = browser(staff).get(reverse("audit_log"), {"action": "logout"})
    assert len(page.context["page"]) == 50
    assert b"action=logout&amp;page=2" in page.content
    assert b'<span title="logout">Logout</span>' in page.content  # the action's name
    second = browser(staff).get(reverse("audit_log"), {"action": "logout", "page": "2"})
    assert len(second.context["page"]) == 5


def test_csv_export_follows_the_filters(alice, bob, staff):
    _events(alice, bob)
    response = browser(staff).get(reverse("audit_export"), {"user": "bob"})
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="audit-log.csv"' in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:3] == ["time", "user", "action"]
    assert [r[1:3] for r in rows[1:]] == [["bob", "token.create"]]
    assert rows[1][6] == "2"


def test_csv_export_neutralises_formulas(alice, staff, make_kb):
    kb = make_kb(alice, name='=HYPERLINK("http://evil")')
    audit_record(actor=alice, action="knowledge_base.delete", obj=kb, knowledge_base=kb)
    audit_record(action="login_failed", details={"username": "@SUM(1)"})
    response = browser(staff).get(reverse("audit_export"))
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    cells = [cell for row in rows[1:] for cell in row]
    assert '\'=HYPERLINK("http://evil")' in cells
    assert not any(cell[:1] in "=+-@" for cell in cells if cell)
    assert [csv_safe(v) for v in ("-1", "+1", "@a", "\tx", "ok", None)] == [
        "'-1",
        "'+1",
        "'@a",
        "'\tx",
        "ok",
        "",
    ]


# --- append-only -----------------------------------------------------------------------------


def test_the_application_cannot_change_or_delete_events(alice):
    event = audit_record(actor=alice, action="login")
    event.action = "logout"
    with pytest.raises(AuditLogAppendOnly):
        event.save()
    with pytest.raises(AuditLogAppendOnly):
        event.delete()
    with pytest.raises(AuditLogAppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(action="logout")
    with pytest.raises(AuditLogAppendOnly):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "login"


def test_the_admin_is_read_only(staff):
    model_admin = site._registry[AuditEvent]
    request = RequestFactory().get("/admin/")
    request.user = staff
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


def test_deleting_a_user_keeps_their_name_on_the_events(bob):
    audit_record(actor=bob, action="login")
    bob.delete()
    event = last("login")
    assert (event.actor, event.actor_name) == (None, "bob")


def test_an_action_rolled_back_leaves_no_record(alice, make_kb):
    from django.db import transaction

    kb = make_kb(alice)
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(actor=alice, action="knowledge_base.delete", obj=kb, knowledge_base=kb)
        raise RuntimeError("the deletion failed")
    assert not AuditEvent.objects.exists()


def test_details_postgresql_cannot_store_are_made_storable(alice, make_kb):
    kb = make_kb(alice)
    event = audit_record(
        actor=alice,
        action="knowledge_base.settings",
        obj=kb,
        details={"changed": {"abstain_threshold": [None, float("nan")], "name": ["a\x00", "b"]}},
    )
    event = AuditEvent.objects.get(pk=event.pk)
    assert event.details == {"changed": {"abstain_threshold": [None, "nan"], "name": ["a", "b"]}}


def test_group_grants_on_the_web_are_recorded(alice, make_kb):
    kb = make_kb(alice)
    Group.objects.create(name="support")
    web = browser(alice)
    web.post(
        reverse("kb_members", args=[kb.pk]), {"group-group": "support", "group-role": Role.EDITOR}
    )
    grant = GroupMembership.objects.get(knowledge_base=kb)
    web.post(reverse("kb_group_remove", args=[kb.pk, grant.pk]))
    rows = list(
        AuditEvent.objects.filter(knowledge_base_id=kb.pk)
        .order_by("id")
        .values_list("action", "object_label", "details")
    )
    assert rows == [
        ("member.add", "support", {"role": "editor"}),
        ("member.remove", "support", {"role": "editor"}),
    ]


def test_group_creation_and_membership_changes_are_recorded(staff, alice, client):
    headers = bearer(staff)
    created = client.post(
        "/api/v1/groups", {"name": "hr"}, content_type="application/json", **headers
    ).json()
    assert last("group.create").object_label == "hr"
    client.post(
        f"/api/v1/groups/{created['id']}/members",
        {"username": "alice"},
        content_type="application/json",
        **headers,
    )
    added = last("group.member_add")
    assert added.details == {"user": "alice"} and added.actor == staff
    client.delete(f"/api/v1/groups/{created['id']}/members/alice", **headers)
    assert last("group.member_remove").details == {"user": "alice"}
