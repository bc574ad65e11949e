"""Curation's changes are in the audit log like other settings changes: FAQ entries added,
changed, deleted and imported (pages, API, a gap's answer) and share links created and
revoked (page and API), with who, from where and which knowledge base; staff filter the
audit page by these actions."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from curation.faq import faq_add
from curation.models import FaqEntry, ShareLink
from curation.sharing import share_link_create
from ragapp.audit import ACTIONS
from ragapp.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db

AGENT = "CurationAudit/1.0"
ADDRESS = "10.9.8.7"


@pytest.fixture(autouse=True)
def no_proxy(settings):
    settings.RAG_TRUSTED_PROXIES = 0


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def kb(alice, make_kb):
    return make_kb(alice, "helpdesk")


def browser(user) -> Client:
    client = Client(REMOTE_ADDR=ADDRESS, HTTP_USER_AGENT=AGENT)
    client.force_login(user)
    return client


def bearer(user) -> dict:
    return {
        "HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user, 't')[1]}",
        "REMOTE_ADDR": ADDRESS,
        "HTTP_USER_AGENT": AGENT,
    }


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("pk"))


def only(action: str) -> AuditEvent:
    (event,) = events(action)
    return event


def check(event: AuditEvent, user, kb) -> None:
    assert event.actor == user and event.actor_name == user.username
    assert event.knowledge_base_id == kb.pk
    assert event.ip == ADDRESS and event.user_agent == AGENT


def test_faq_pages_record_add_change_import_and_delete(alice, kb):
    web = browser(alice)
    web.post(reverse("kb_faqs", args=[kb.pk]), {"question": "Q one?", "answer": "A one."})
    entry = FaqEntry.objects.get(question="Q one?")
    event = only("faq.add")
    check(event, alice, kb)
    assert (event.object_type, event.object_id) == ("curation.faqentry", str(entry.pk))
    assert event.details["question"] == "Q one?"

    web.post(reverse("faq_edit", args=[entry.pk]), {"question": "Q one?", "answer": "A two."})
    event = only("faq.change")
    check(event, alice, kb)
    assert event.details == {"changed": {"answer": ["A one.", "A two."]}}
    # Saved unchanged: nothing to record.
    web.post(reverse("faq_edit", args=[entry.pk]), {"question": "Q one?", "answer": "A two."})
    assert len(events("faq.change")) == 1

    csv = SimpleUploadedFile("faq.csv", b"question,answer\nQ two?,A.\nQ three?,B.\nbad row\n")
    web.post(reverse("kb_faq_import", args=[kb.pk]), {"file": csv})
    event = only("faq.import")
    check(event, alice, kb)
    assert event.details["added"] == 2 and event.details["refused_rows"] == [4]
    assert sorted(event.details["ids"]) == sorted(
        FaqEntry.objects.filter(question__in=["Q two?", "Q three?"]).values_list("pk", flat=True)
    )

    web.post(reverse("faq_delete", args=[entry.pk]))
    event = only("faq.delete")
    check(event, alice, kb)
    assert event.object_id == str(entry.pk) and event.object_label == "Q one?"
    assert not FaqEntry.objects.filter(pk=entry.pk).exists()


def test_refused_faq_changes_are_not_recorded(alice, kb):
    faq_add(knowledge_base=kb, question="Q one?", answer="A.")
    web = browser(alice)
    web.post(reverse("kb_faqs", args=[kb.pk]), {"question": "q ONE", "answer": "dup"})
    csv = SimpleUploadedFile("faq.csv", b"Q one?,again\n")
    web.post(reverse("kb_faq_import", args=[kb.pk]), {"file": csv})
    assert not AuditEvent.objects.filter(action__startswith="faq.").exists()


def test_faq_api_records_add_change_import_and_delete(client, alice, kb):
    headers = bearer(alice)
    created = client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/faqs",
        {"question": "Q one?", "answer": "A one."},
        content_type="application/json",
        **headers,
    ).json()
    check(only("faq.add"), alice, kb)
    client.patch(
        f"/api/v1/faqs/{created['id']}",
        {"question": "Q uno?"},
        content_type="application/json",
        **headers,
    )
    event = only("faq.change")
    check(event, alice, kb)
    assert event.details == {"changed": {"question": ["Q one?", "Q uno?"]}}
    client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/faqs/import",
        {"file": SimpleUploadedFile("f.csv", b"Q two?,A.\n")},
        **headers,
    )
    assert only("faq.import").details["added"] == 1
    assert client.delete(f"/api/v1/faqs/{created['id']}", **headers).status_code == 204
    check(only("faq.delete"), alice, kb)


def test_share_link_page_records_create_and_revoke_once(alice, kb, make_kb):
    other = make_kb(alice, "other")
    web = browser(alice)
    web.post(
        reverse("kb_share_links", args=[kb.pk]),
        {"title": "Help", "knowledge_bases": [str(other.pk)], "login_required": "on"},
    )
    link = ShareLink.objects.get(title="Help")
    event = only("share_link.create")
    check(event, alice, kb)
    assert (event.object_type, event.object_id) == ("curation.sharelink", str(link.pk))
    assert event.details["knowledge_bases"] == sorted([kb.pk, other.pk])
    assert event.details["login_required"] is True
    # Not the token: the audit log is no place for a working secret.
    assert link.token not in str(event.details)

    revoke = reverse("kb_share_link_revoke", args=[kb.pk, link.pk])
    web.post(revoke)
    web.post(revoke)  # already revoked: nothing happens, nothing recorded
    event = only("share_link.revoke")
    check(event, alice, kb)
    assert event.object_id == str(link.pk)


def test_share_link_api_records_create_and_revoke(client, alice, kb):
    headers = bearer(alice)
    created = client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/share-links",
        {"title": "Help"},
        content_type="application/json",
        **headers,
    ).json()
    check(only("share_link.create"), alice, kb)
    assert client.delete(f"/api/v1/share-links/{created['id']}", **headers).status_code == 204
    assert client.delete(f"/api/v1/share-links/{created['id']}", **headers).status_code == 204
    event = only("share_link.revoke")
    check(event, alice, kb)
    assert event.object_id == str(created["id"])


def test_refused_share_link_is_not_recorded(alice, kb):
    browser(alice).post(reverse("kb_share_links", args=[kb.pk]), {"title": ""})
    assert not ShareLink.objects.exists()
    assert not events("share_link.create")


def test_audit_page_names_and_filters_the_new_actions(alice, kb, make_user):
    staff = make_user("root", is_staff=True)
    link = share_link_create(owner=alice, knowledge_bases=[kb], title="Help")
    browser(alice).post(reverse("kb_share_link_revoke", args=[kb.pk, link.pk]))
    browser(alice).post(reverse("kb_faqs", args=[kb.pk]), {"question": "Q?", "answer": "A."})
    for action in (
        "faq.add",
        "faq.change",
        "faq.delete",
        "faq.import",
        "share_link.create",
        "share_link.revoke",
    ):
        assert action in ACTIONS
    page = browser(staff).get(reverse("audit_log"), {"action": "share_link.revoke"})
    assert page.status_code == 200
    text = page.content.decode()
    assert 'value="share_link.revoke" selected' in text
    assert "Share link revoked" in text
    assert "FAQ entry added" in text  # in the filter's list
    assert "Help" in text and "Q?" not in text  # the revoke's row only


def test_save_as_faq_and_a_gap_answer_record_faq_add(alice, kb):
    from chat.models import Conversation, Message, Mode
    from curation.models import Gap

    conversation = Conversation.objects.create(user=alice)
    conversation.knowledge_bases.set([kb])
    message = Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        question="Q?",
        mode=Mode.GENERATED,
        content="A.",
    )
    web = browser(alice)
    response = web.post(
        reverse("faq_from_message", args=[message.pk]), {"question": "Q?", "answer": "A."}
    )
    assert response.status_code == 201
    event = only("faq.add")
    check(event, alice, kb)
    assert event.object_id == str(response.json()["id"])

    now = timezone.now()
    gap = Gap.objects.create(
        knowledge_base=kb,
        label="Where is it?",
        embedder="x",
        centroid=[1.0],
        first_seen=now,
        last_seen=now,
    )
    web.post(reverse("kb_gap_answer", args=[kb.pk, gap.pk]), {"answer": "Here."})
    added = events("faq.add")
    assert len(added) == 2 and added[1].details["question"] == "Where is it?"
    check(added[1], alice, kb)
