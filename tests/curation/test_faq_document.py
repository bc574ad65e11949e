"""The per-knowledge-base FAQ document (curation.faq.faq_document) has no file: its chunks are
the FAQ entries. Re-ingesting it (page, API, admin, any caller of document_enqueue) and
deleting it as a document are refused with a reason that points to the FAQ page; the
document list shows it as "FAQ entries (n)" linked to that page."""

import pytest
from django.contrib.admin.sites import AdminSite
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import RequestFactory
from django.urls import reverse

from curation.faq import faq_add, faq_document
from curation.models import FaqEntry
from ingestion.admin import DocumentAdmin
from ingestion.models import Document, DocumentStatus, Membership, Role
from ingestion.services import NotReingestable, document_enqueue
from ragapp.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def kb(alice, make_kb):
    return make_kb(alice, "helpdesk")


@pytest.fixture
def faq_doc(kb, alice):
    faq_add(knowledge_base=kb, question="How do I reset my password?", answer="Use the link.")
    faq_add(knowledge_base=kb, question="Where is the office?", answer="Main street 1.")
    return faq_document(knowledge_base=kb)


def _api(client, user):
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user, 'test')[1]}"}


def _unchanged(document):
    document.refresh_from_db()
    assert document.status == DocumentStatus.READY
    assert document.chunks.count() == 2


def test_document_enqueue_refuses_the_faq_document(faq_doc):
    with pytest.raises(NotReingestable, match="FAQ page"):
        document_enqueue(document=faq_doc, force=True)
    _unchanged(faq_doc)


def test_api_reingest_of_the_faq_document_is_409(client, alice, faq_doc):
    response = client.post(f"/api/v1/documents/{faq_doc.pk}/reingest", **_api(client, alice))
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert "FAQ page" in error["message"]
    _unchanged(faq_doc)


def test_api_delete_of_the_faq_document_is_409(client, alice, faq_doc):
    response = client.delete(f"/api/v1/documents/{faq_doc.pk}", **_api(client, alice))
    assert response.status_code == 409
    assert "FAQ page" in response.json()["error"]["message"]
    assert Document.objects.filter(pk=faq_doc.pk).exists()
    assert FaqEntry.objects.filter(knowledge_base=faq_doc.knowledge_base).count() == 2


def test_page_reingest_and_delete_are_refused_with_a_message(client, alice, kb, faq_doc):
    client.force_login(alice)
    for name in ("document_retry", "document_delete"):
        response = client.post(reverse(name, args=[faq_doc.pk]), follow=True)
        assert response.redirect_chain[-1][0] == reverse("kb_faqs", args=[kb.pk])
        assert "FAQ page" in " ".join(str(m) for m in response.context["messages"])
        # The portal's script gets a 409 with the reason.
        response = client.post(
            reverse(name, args=[faq_doc.pk]), HTTP_X_REQUESTED_WITH="XMLHttpRequest"
        )
        assert response.status_code == 409
        assert "FAQ page" in response.json()["error"]
    _unchanged(faq_doc)


def test_admin_reingest_skips_the_faq_document(alice, kb, faq_doc):
    other = Document.objects.create(
        knowledge_base=kb, original_name="a.txt", content_hash="x" * 64, status="ready"
    )
    request = RequestFactory().post("/")
    request.user = alice
    request.session = {}
    request._messages = FallbackStorage(request)
    admin = DocumentAdmin(Document, AdminSite())
    admin.reingest(request, Document.objects.filter(pk__in=[faq_doc.pk, other.pk]))
    _unchanged(faq_doc)
    other.refresh_from_db()
    assert other.status == DocumentStatus.QUEUED
    texts = [str(m) for m in request._messages]
    assert any("FAQ page" in t for t in texts)
    assert any("1 document(s) queued." in t for t in texts)


def test_admin_delete_keeps_the_faq_document(
    admin_client, kb, faq_doc, django_capture_on_commit_callbacks
):
    other = Document.objects.create(knowledge_base=kb, original_name="x.txt", content_hash="x")
    # Its own delete page is refused (no delete button on its change page either).
    assert (
        admin_client.get(reverse("admin:ingestion_document_delete", args=[faq_doc.pk])).status_code
        == 403
    )
    # The bulk action deletes the rest and says why the FAQ document stayed.
    changelist = reverse("admin:ingestion_document_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            changelist,
            {
                "action": "delete_selected",
                "_selected_action": [faq_doc.pk, other.pk],
                "post": "yes",
            },
            follow=True,
        )
    assert response.status_code == 200
    assert not Document.objects.filter(pk=other.pk).exists()
    _unchanged(faq_doc)
    assert FaqEntry.objects.filter(knowledge_base=kb).count() == 2
    assert any("FAQ page" in str(m) for m in response.context["messages"])


def test_document_list_shows_the_faq_entries_linked_to_the_faq_page(
    client, alice, kb, faq_doc, make_user
):
    client.force_login(alice)
    rows = client.get(reverse("kb_documents", args=[kb.pk])).json()["documents"]
    (row,) = [r for r in rows if r["id"] == faq_doc.pk]
    assert row["faq"] is True
    assert row["name"] == "FAQ entries (2)"
    assert row["view_url"] == reverse("kb_faqs", args=[kb.pk])
    # A viewer cannot open the FAQ page: no link to it.
    viewer = make_user("vic")
    Membership.objects.create(knowledge_base=kb, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    rows = client.get(reverse("kb_documents", args=[kb.pk])).json()["documents"]
    (row,) = [r for r in rows if r["id"] == faq_doc.pk]
    assert row["name"] == "FAQ entries (2)" and "view_url" not in row
