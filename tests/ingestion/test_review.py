"""Contributions with review: in a knowledge base that requires review, documents uploaded by
a contributor wait (pending, not indexed) until an editor or owner approves them; rejected
ones carry the reviewer's reason. Contributors rank between viewers and editors."""

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client

from ingestion.models import (
    Document,
    DocumentStatus,
    GroupMembership,
    KnowledgeBase,
    Membership,
    ReviewStatus,
    Role,
)
from ingestion.scope import document_scope
from ragapp.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db


def _client(user):
    client = Client()
    client.force_login(user)
    return client


def _api(user):
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user, 't')[1]}"}


@pytest.fixture
def team(make_user, make_kb):
    owner = make_user("owner")
    editor, carl, vera = make_user("editor"), make_user("carl"), make_user("vera")
    kb = make_kb(owner, "handbook", require_review=True)
    Membership.objects.create(knowledge_base=kb, user=editor, role=Role.EDITOR)
    Membership.objects.create(knowledge_base=kb, user=carl, role=Role.CONTRIBUTOR)
    Membership.objects.create(knowledge_base=kb, user=vera, role=Role.VIEWER)
    return kb, owner, editor, carl, vera


def _upload(client, kb, name="notes.txt", content=b"alpha beta gamma"):
    return client.post(
        f"/kb/{kb.pk}/upload",
        {"files": [SimpleUploadedFile(name, content, content_type="text/plain")]},
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
    )


def _listed(client, kb):
    return {d["name"]: d for d in client.get(f"/kb/{kb.pk}/documents.json").json()["documents"]}


def test_contributor_ranks_between_viewer_and_editor(team, make_user):
    kb, owner, editor, carl, vera = team
    assert kb.role_of(carl) == Role.CONTRIBUTOR
    # A group's contributor grant lifts a viewer, and never lowers an editor.
    writers = Group.objects.create(name="writers")
    GroupMembership.objects.create(knowledge_base=kb, group=writers, role=Role.CONTRIBUTOR)
    vera.groups.add(writers)
    editor.groups.add(writers)
    assert kb.role_of(vera) == Role.CONTRIBUTOR
    assert kb.role_of(editor) == Role.EDITOR
    assert set(KnowledgeBase.objects.uploadable_by(carl)) == {kb}
    assert not KnowledgeBase.objects.editable_by(carl).exists()
    assert set(KnowledgeBase.objects.readable_by(carl)) == {kb}
    stranger = make_user("stranger")
    assert not KnowledgeBase.objects.uploadable_by(stranger).exists()
    # The portal offers contributors the upload form, and viewers not.
    assert 'id="upload-form"' in _client(carl).get(f"/kb/{kb.pk}/").content.decode()
    vera.groups.remove(writers)
    assert 'id="upload-form"' not in _client(vera).get(f"/kb/{kb.pk}/").content.decode()


def test_contributor_upload_waits_for_review_and_is_not_enqueued(
    team, django_capture_on_commit_callbacks
):
    kb, owner, editor, carl, vera = team
    with django_capture_on_commit_callbacks() as callbacks:
        response = _upload(_client(carl), kb)
    assert response.status_code == 200, response.content
    assert response.json()["accepted"]
    document = Document.objects.get(knowledge_base=kb)
    assert document.review_status == ReviewStatus.PENDING
    assert document.task_id == "" and not callbacks  # nothing sent to the workers
    assert not document.chunks.exists()
    # The uploader sees it as waiting; viewers do not see it at all (list, API, file).
    mine = _listed(_client(carl), kb)["notes.txt"]
    assert mine["review_status"] == "pending"
    assert mine["review_label"] == "Waiting for review"
    assert "notes.txt" not in _listed(_client(vera), kb)
    listing = Client().get(f"/api/v1/knowledge-bases/{kb.pk}/documents", **_api(vera))
    assert [d["name"] for d in listing.json()["items"]] == []
    assert Client().get(f"/api/v1/documents/{document.pk}", **_api(vera)).status_code == 404
    assert _client(vera).get(f"/documents/{document.pk}/file").status_code == 404
    # The uploader and the editors may open the original.
    assert _client(carl).get(f"/documents/{document.pk}/file").status_code == 200
    assert _client(editor).get(f"/documents/{document.pk}/file").status_code == 200
    # Recall is limited to approved documents, for the uploader too.
    assert _recallable(carl, kb) == set()
    Document.objects.filter(pk=document.pk).update(review_status=ReviewStatus.APPROVED)
    assert _recallable(carl, kb) == {document.pk}


def _recallable(user, kb):
    """The documents recall may return: the scope's SQL, run as recall runs it."""
    scope = document_scope(user=user, knowledge_bases=[kb])
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT d.id FROM ingestion_document d WHERE d.knowledge_base_id = %s AND {scope.sql}",
            [kb.pk, *scope.params],
        )
        return {row[0] for row in cursor.fetchall()}


def test_pending_documents_are_not_in_the_ingestion_queue(team):
    kb, owner, editor, carl, vera = team
    _upload(_client(carl), kb, "waiting.txt", b"one")
    _upload(_client(editor), kb, "ready.txt", b"two")
    rows = _listed(_client(editor), kb)
    assert rows["ready.txt"]["queue_position"] == 1
    assert rows["waiting.txt"]["queue_position"] is None


def test_review_queue_lists_pending_documents_for_editors_only(team):
    kb, owner, editor, carl, vera = team
    _upload(_client(carl), kb, "draft.txt")
    page = _client(editor).get(f"/kb/{kb.pk}/review/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "draft.txt" in body and "carl" in body and "csrfmiddlewaretoken" in body
    assert "Review (1)" in _client(owner).get(f"/kb/{kb.pk}/").content.decode()
    for user in (carl, vera):
        assert _client(user).get(f"/kb/{kb.pk}/review/").status_code == 404
        assert "Review (" not in _client(user).get(f"/kb/{kb.pk}/").content.decode()


def test_approve_enqueues_and_publishes(team, django_capture_on_commit_callbacks):
    kb, owner, editor, carl, vera = team
    _upload(_client(carl), kb)
    document = Document.objects.get(knowledge_base=kb)
    with django_capture_on_commit_callbacks() as callbacks:
        response = _client(editor).post(f"/documents/{document.pk}/approve")
    assert response.status_code == 302
    assert len(callbacks) == 1  # the ingestion task, sent on commit
    document.refresh_from_db()
    assert document.review_status == ReviewStatus.APPROVED
    assert document.reviewed_by == editor and document.reviewed_at is not None
    assert document.status == DocumentStatus.QUEUED and document.task_id
    assert "notes.txt" in _listed(_client(vera), kb)
    assert AuditEvent.objects.filter(action="document.approve", actor=editor).exists()
    # Only pending documents are reviewed: approving again changes nothing.
    with django_capture_on_commit_callbacks() as again:
        _client(owner).post(f"/documents/{document.pk}/approve")
    assert not again
    document.refresh_from_db()
    assert document.reviewed_by == editor


def test_reject_needs_a_reason_which_the_uploader_sees(team):
    kb, owner, editor, carl, vera = team
    _upload(_client(carl), kb)
    document = Document.objects.get(knowledge_base=kb)
    _client(owner).post(f"/documents/{document.pk}/reject", {"reason": "  "})
    document.refresh_from_db()
    assert document.review_status == ReviewStatus.PENDING
    _client(owner).post(f"/documents/{document.pk}/reject", {"reason": "Out of date."})
    document.refresh_from_db()
    assert document.review_status == ReviewStatus.REJECTED
    assert not document.chunks.exists() and document.task_id == ""
    row = _listed(_client(carl), kb)["notes.txt"]
    assert (row["review_status"], row["review_reason"]) == ("rejected", "Out of date.")
    assert "notes.txt" not in _listed(_client(vera), kb)
    event = AuditEvent.objects.get(action="document.reject")
    assert event.details["reason"] == "Out of date."


def test_contributor_has_no_other_editor_rights(team):
    kb, owner, editor, carl, vera = team
    _upload(_client(carl), kb)
    document = Document.objects.get(knowledge_base=kb)
    client = _client(carl)
    for path in ("approve", "retry", "delete"):
        assert client.post(f"/documents/{document.pk}/{path}").status_code == 404
    assert client.post(f"/documents/{document.pk}/reject", {"reason": "x"}).status_code == 404
    assert client.get(f"/kb/{kb.pk}/settings/").status_code == 403
    assert Document.objects.get(pk=document.pk).review_status == ReviewStatus.PENDING
    headers = _api(carl)
    api = Client()
    assert api.post(f"/api/v1/documents/{document.pk}/approve", **headers).status_code == 404
    assert api.post(f"/api/v1/documents/{document.pk}/reingest", **headers).status_code == 404
    assert api.delete(f"/api/v1/documents/{document.pk}", **headers).status_code == 404


def test_editor_cannot_reingest_a_pending_document(team):
    kb, owner, editor, carl, vera = team
    _upload(_client(carl), kb)
    document = Document.objects.get(knowledge_base=kb)
    assert _client(editor).post(f"/documents/{document.pk}/retry").status_code == 403
    response = Client().post(f"/api/v1/documents/{document.pk}/reingest", **_api(editor))
    assert response.status_code == 409
    assert Document.objects.get(pk=document.pk).task_id == ""


def test_without_review_a_contributors_upload_is_approved_at_once(
    team, django_capture_on_commit_callbacks
):
    kb, owner, editor, carl, vera = team
    KnowledgeBase.objects.filter(pk=kb.pk).update(require_review=False)
    with django_capture_on_commit_callbacks() as callbacks:
        _upload(_client(carl), kb)
    document = Document.objects.get(knowledge_base=kb)
    assert document.review_status == ReviewStatus.APPROVED
    assert len(callbacks) == 1 and document.task_id


def test_editors_uploads_skip_review(team, django_capture_on_commit_callbacks):
    kb, owner, editor, carl, vera = team
    with django_capture_on_commit_callbacks() as callbacks:
        _upload(_client(editor), kb)
    assert Document.objects.get(knowledge_base=kb).review_status == ReviewStatus.APPROVED
    assert len(callbacks) == 1


def test_contributor_urls_wait_for_review_too(team, django_capture_on_commit_callbacks):
    kb, owner, editor, carl, vera = team
    with django_capture_on_commit_callbacks() as callbacks:
        _client(carl).post(f"/kb/{kb.pk}/add-url", {"url": "https://example.com/a.html"})
        response = Client().post(
            f"/api/v1/knowledge-bases/{kb.pk}/documents/url",
            {"url": "https://example.com/b.html"},
            content_type="application/json",
            **_api(carl),
        )
    assert response.status_code == 201
    assert response.json()["review_status"] == "pending"
    assert not callbacks
    statuses = set(Document.objects.filter(knowledge_base=kb).values_list("review_status"))
    assert statuses == {(ReviewStatus.PENDING,)}


def test_api_upload_approve_and_reject(team, django_capture_on_commit_callbacks):
    kb, owner, editor, carl, vera = team
    api = Client()
    files = [SimpleUploadedFile("a.txt", b"one two"), SimpleUploadedFile("b.txt", b"three")]
    response = api.post(
        f"/api/v1/knowledge-bases/{kb.pk}/documents", {"files": files}, **_api(carl)
    )
    assert response.status_code == 201
    accepted = {d["name"]: d for d in response.json()["accepted"]}
    assert {d["review_status"] for d in accepted.values()} == {"pending"}
    a, b = accepted["a.txt"]["id"], accepted["b.txt"]["id"]
    # Viewers get 404, as for a document that does not exist.
    assert api.post(f"/api/v1/documents/{a}/approve", **_api(vera)).status_code == 404
    assert api.post("/api/v1/documents/999999/approve", **_api(editor)).status_code == 404
    with django_capture_on_commit_callbacks() as callbacks:
        approved = api.post(f"/api/v1/documents/{a}/approve", **_api(editor))
    assert approved.status_code == 200
    assert approved.json()["review_status"] == "approved"
    assert approved.json()["status"] == "queued"
    assert len(callbacks) == 1
    assert api.post(f"/api/v1/documents/{a}/approve", **_api(editor)).status_code == 409
    reject = f"/api/v1/documents/{b}/reject"
    missing = api.post(reject, {"reason": ""}, content_type="application/json", **_api(owner))
    assert missing.status_code == 422
    rejected = api.post(
        reject, {"reason": "Wrong topic"}, content_type="application/json", **_api(owner)
    )
    assert rejected.status_code == 200
    assert rejected.json()["review_status"] == "rejected"
    assert rejected.json()["review_reason"] == "Wrong topic"
    # The uploader sees the reason through the API as well.
    mine = api.get(f"/api/v1/documents/{b}", **_api(carl)).json()
    assert (mine["review_status"], mine["review_reason"]) == ("rejected", "Wrong topic")


def test_owner_sets_require_review_and_grants_contributor(team, make_user):
    kb, owner, editor, carl, vera = team
    api = Client()
    headers = _api(owner)
    response = api.patch(
        f"/api/v1/knowledge-bases/{kb.pk}",
        {"require_review": False},
        content_type="application/json",
        **headers,
    )
    assert response.status_code == 200 and response.json()["require_review"] is False
    # null leaves it as it is
    api.patch(
        f"/api/v1/knowledge-bases/{kb.pk}",
        {"require_review": None},
        content_type="application/json",
        **headers,
    )
    assert KnowledgeBase.objects.get(pk=kb.pk).require_review is False
    response = _client(owner).post(
        f"/kb/{kb.pk}/settings/", {"name": kb.name, "description": "", "require_review": "on"}
    )
    assert response.status_code == 302
    assert KnowledgeBase.objects.get(pk=kb.pk).require_review is True
    nina = make_user("nina")
    response = api.post(
        f"/api/v1/knowledge-bases/{kb.pk}/members",
        {"username": "nina", "role": "contributor"},
        content_type="application/json",
        **headers,
    )
    assert response.status_code == 201
    assert kb.role_of(nina) == Role.CONTRIBUTOR
    make_user("otto")
    _client(owner).post(f"/kb/{kb.pk}/members/", {"username": "otto", "role": "contributor"})
    assert Membership.objects.get(knowledge_base=kb, user__username="otto").role == "contributor"


def test_ingestion_never_indexes_a_document_that_is_not_approved(team):
    """Recall leaves review out of its filter because of this (ingestion.scope.recall_sql):
    even a stray message for a pending or rejected document indexes nothing."""
    from ingestion.models import Chunk
    from ingestion.services import document_ingest, documents_ingest_batch

    kb, owner, editor, carl, vera = team
    _upload(_client(carl), kb, "waiting.txt", b"alpha beta gamma")
    _upload(_client(carl), kb, "refused.txt", b"delta epsilon")
    waiting = Document.objects.get(original_name="waiting.txt")
    refused = Document.objects.get(original_name="refused.txt")
    Document.objects.filter(pk=refused.pk).update(review_status=ReviewStatus.REJECTED)
    document_ingest(document_id=waiting.pk)
    documents_ingest_batch(document_ids=[waiting.pk, refused.pk])
    assert not Chunk.objects.filter(document__in=[waiting, refused]).exists()
    waiting.refresh_from_db()
    assert waiting.review_status == ReviewStatus.PENDING
    assert waiting.status != DocumentStatus.READY
