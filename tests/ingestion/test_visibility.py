"""Restricted documents (issue #16 part 2): a document restricted to some members is seen
only by them and the knowledge base's owners, on every surface, and recall applies the
restriction in SQL before ranking. Anyone else gets the same 404 as for a missing document.

The world: owner O; viewer A (not allowed); viewer B (allowed by name); C, whose only role
is through group G (allowed through G); editor E (not allowed: editing rights do not open a
restricted document, only ownership does).
"""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from ingestion.models import Chunk, Document, GroupMembership, Membership, Role
from ingestion.scope import document_scope
from ingestion.selectors import chunks_for, visible_documents
from ingestion.services import DocumentVisibility, document_create, document_set_visibility
from ragapp.models import ApiToken
from tests.conftest import ingest_texts

pytestmark = pytest.mark.django_db

SECRET_NAME = "vault.md"
SECRET_WORD = "4417"
TEXTS = {
    "cafeteria.md": "The cafeteria opens at noon and serves tomato soup on Mondays.",
    "parking.md": "Visitors park in the north lot and show their badge at the gate.",
    "printers.md": "The printers on the second floor need a badge to release print jobs.",
    SECRET_NAME: (
        "The vault door code is 4417. Open the vault door by entering the code 4417 on the "
        "keypad next to the vault."
    ),
}
QUESTION = "What is the vault door code?"


@pytest.fixture
def world(make_user, make_kb):
    owner = make_user("olga")
    kb = make_kb(owner, "handbook")
    users = {"O": owner}
    for key, name, role in (("A", "anna", Role.VIEWER), ("B", "ben", Role.VIEWER)):
        users[key] = make_user(name)
        Membership.objects.create(knowledge_base=kb, user=users[key], role=role)
    users["E"] = make_user("emil")
    Membership.objects.create(knowledge_base=kb, user=users["E"], role=Role.EDITOR)
    group = Group.objects.create(name="vault-team")
    GroupMembership.objects.create(knowledge_base=kb, group=group, role=Role.VIEWER)
    users["C"] = make_user("carl")
    users["C"].groups.add(group)
    return kb, users, group


def _restrict(kb, users, group):
    secret = kb.documents.get(original_name=SECRET_NAME)
    document_set_visibility(
        document=secret, visible_to=DocumentVisibility(users=(users["B"],), groups=(group,))
    )
    return secret


def _bare_documents(kb):
    """Documents without ingestion (no models): enough for lists, files and the API."""
    for name, text in TEXTS.items():
        document_create(
            knowledge_base=kb, fileobj=io.BytesIO(text.encode()), name=name, enqueue=False
        )


def _token(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user, 't')[1]}"}


ALLOWED = {"O", "B", "C"}


# --- the rules, without models ----------------------------------------------------------------


def test_selectors_and_recall_scope_follow_the_same_rules(world):
    kb, users, group = world
    _bare_documents(kb)
    secret = _restrict(kb, users, group)
    Chunk.objects.create(
        knowledge_base=kb, document=secret, ordinal=0, text=SECRET_WORD, search_length=1
    )
    for key, user in users.items():
        scope = document_scope(user=user, knowledge_bases=[kb])
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT d.id FROM ingestion_document d WHERE {scope.sql}",  # noqa: S608
                scope.params,
            )
            in_sql = {row[0] for row in cursor.fetchall()}
        in_orm = set(visible_documents(user=user).values_list("pk", flat=True))
        assert in_sql == in_orm, key
        assert (secret.pk in in_orm) == (key in ALLOWED), key
        assert len(in_orm) == (4 if key in ALLOWED else 3), key
        assert chunks_for(user=user).filter(document=secret).exists() == (key in ALLOWED), key
    # The system (user None) sees everything; taking C out of the group closes it at once.
    assert secret.pk in set(visible_documents(user=None).values_list("pk", flat=True))
    users["C"].groups.remove(group)
    assert not visible_documents(user=users["C"]).filter(pk=secret.pk).exists()


def test_visible_to_api_upload_get_patch_and_members_only(world, client):
    kb, users, group = world
    owner = _token(users["O"])
    upload = client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/documents",
        {
            "files": [SimpleUploadedFile("plans.md", b"Secret plans for the vault.")],
            "visible_to": json.dumps({"users": ["ben"], "groups": ["vault-team"]}),
        },
        **owner,
    )
    assert upload.status_code == 201, upload.content
    doc_id = upload.json()["accepted"][0]["id"]
    got = client.get(f"/api/v1/documents/{doc_id}", **owner).json()
    assert got["visible_to"] == {"users": ["ben"], "groups": ["vault-team"]}
    assert client.get(f"/api/v1/documents/{doc_id}", **_token(users["A"])).status_code == 404
    missing = client.get("/api/v1/documents/999999", **_token(users["A"]))
    assert missing.status_code == 404
    assert client.get(f"/api/v1/documents/{doc_id}", **_token(users["A"])).json() == missing.json()
    # Users and groups must be members of the knowledge base.
    make_outsider = type(users["O"]).objects.create_user("zed")
    for bad in (
        {"users": ["zed"]},
        {"users": ["nobody"]},
        {"groups": ["strangers"]},
        {"users": "ben"},
    ):
        Group.objects.get_or_create(name="strangers")
        response = client.patch(
            f"/api/v1/documents/{doc_id}",
            {"visible_to": bad},
            content_type="application/json",
            **owner,
        )
        assert response.status_code == 422, bad
    outsider = client.patch(
        f"/api/v1/documents/{doc_id}",
        {"visible_to": {"users": [make_outsider.username]}},
        content_type="application/json",
        **owner,
    )
    assert "not members of this knowledge base: zed" in outsider.content.decode()
    # A viewer may not change it (the write variant of document_get: 404 for B too).
    assert (
        client.patch(
            f"/api/v1/documents/{doc_id}",
            {"visible_to": None},
            content_type="application/json",
            **_token(users["B"]),
        ).status_code
        == 404
    )
    # null lifts the restriction: A sees it now.
    lifted = client.patch(
        f"/api/v1/documents/{doc_id}",
        {"visible_to": None},
        content_type="application/json",
        **owner,
    )
    assert lifted.status_code == 200 and lifted.json()["visible_to"] is None
    assert client.get(f"/api/v1/documents/{doc_id}", **_token(users["A"])).status_code == 200
    # Omitting visible_to leaves it alone.
    client.patch(
        f"/api/v1/documents/{doc_id}",
        {"visible_to": {"users": ["ben"]}},
        content_type="application/json",
        **owner,
    )
    client.patch(f"/api/v1/documents/{doc_id}", {}, content_type="application/json", **owner)
    assert Document.objects.get(pk=doc_id).restricted


def test_visible_to_web_form(world, client):
    kb, users, group = world
    _bare_documents(kb)
    secret = kb.documents.get(original_name=SECRET_NAME)
    client.force_login(users["B"])
    page = client.get(f"/documents/{secret.pk}/view").content.decode()
    assert "vault-team" not in page  # viewers get no form
    assert client.post(f"/documents/{secret.pk}/visibility", {"restricted": "1"}).status_code == 404
    client.force_login(users["O"])
    page = client.get(f"/documents/{secret.pk}/view").content.decode()
    assert 'name="groups" value="vault-team"' in page and 'value="ben"' in page
    client.post(
        f"/documents/{secret.pk}/visibility",
        {"restricted": "1", "users": ["ben"], "groups": ["vault-team"]},
    )
    secret.refresh_from_db()
    assert secret.restricted and list(secret.visible_to_users.all()) == [users["B"]]
    client.force_login(users["A"])
    assert client.get(f"/documents/{secret.pk}/view").status_code == 404
    client.force_login(users["O"])
    client.post(f"/documents/{secret.pk}/visibility", {"restricted": ""})
    secret.refresh_from_db()
    assert not secret.restricted and not secret.visible_to_groups.exists()
    client.force_login(users["A"])
    assert client.get(f"/documents/{secret.pk}/view").status_code == 200


# --- every surface, with the real pipeline ---------------------------------------------------


def _single(response) -> bool:
    """A single-object surface: seen (200, or a redirect to the text view) or the 404 of a
    missing object; nothing else."""
    assert response.status_code in (200, 302, 404), response.status_code
    return response.status_code != 404


def _listed(response) -> bool:
    assert response.status_code == 200, response.status_code
    body = b"".join(response.streaming_content) if response.streaming else response.content
    body = body.decode()
    return SECRET_NAME in body or SECRET_WORD in body


def _owner_page(response) -> bool:
    """Owners-only pages (dashboards and their question lists): others get 403 and see
    nothing of the document."""
    assert response.status_code in (200, 403), response.status_code
    if response.status_code == 403:
        assert SECRET_NAME not in response.content.decode()
    return response.status_code == 200


def _surfaces(kb, secret, chunk):
    chat_body = {"question": QUESTION, "knowledge_bases": [kb.pk]}
    openai_body = {"model": f"kb-{kb.pk}", "messages": [{"role": "user", "content": QUESTION}]}
    j = "application/json"
    return [
        # (surface, how to call it as client c with API headers h, reading, who sees it)
        ("web documents JSON", lambda c, h: c.get(f"/kb/{kb.pk}/documents.json"), _listed),
        ("original file", lambda c, h: c.get(f"/documents/{secret.pk}/file"), _single),
        ("chunk view", lambda c, h: c.get(f"/documents/{secret.pk}/view"), _single),
        ("pdf viewer", lambda c, h: c.get(f"/documents/{secret.pk}/pdf"), _single),
        (
            "API chunk list",
            lambda c, h: c.get(f"/api/v1/documents/{secret.pk}/chunks", **h),
            _single,
        ),
        ("API document", lambda c, h: c.get(f"/api/v1/documents/{secret.pk}", **h), _single),
        (
            "API document list",
            lambda c, h: c.get(f"/api/v1/knowledge-bases/{kb.pk}/documents", **h),
            _listed,
        ),
        (
            "API search",
            lambda c, h: c.post(
                "/api/v1/search",
                {"query": QUESTION, "knowledge_bases": [kb.pk]},
                content_type=j,
                **h,
            ),
            _listed,
        ),
        (
            "API chat",
            lambda c, h: c.post("/api/v1/chat", chat_body, content_type=j, **h),
            _listed,
        ),
        (
            "/v1 chat completions",
            lambda c, h: c.post("/v1/chat/completions", openai_body, content_type=j, **h),
            _listed,
        ),
        (
            "web chat SSE",
            lambda c, h: c.post("/chat/ask", {"question": QUESTION, "kb": [kb.pk]}),
            _listed,
        ),
        ("hit test", lambda c, h: c.get(f"/kb/{kb.pk}/hit-test/", {"q": QUESTION}), _listed),
        ("dashboard", lambda c, h: c.get(f"/kb/{kb.pk}/dashboard/"), _owner_page),
    ]


@pytest.mark.models
def test_every_surface_hides_a_restricted_document(world, client, settings):
    settings.OPENAI_BASE_URL = ""  # extractive answers: no LLM needed
    kb, users, group = world
    ingest_texts(kb, TEXTS)
    secret = _restrict(kb, users, group)
    chunk = secret.chunks.filter(is_parent=False).first()
    assert chunk is not None
    headers = {key: _token(user) for key, user in users.items()}
    seen = {}
    for surface, call, read in _surfaces(kb, secret, chunk):
        for key, user in users.items():
            client.force_login(user)
            seen[surface, key] = read(call(client, headers[key]))
    expected = {
        (surface, key): (key == "O" if surface == "dashboard" else key in ALLOWED)
        for surface, _, _ in _surfaces(kb, secret, chunk)
        for key in users
    }
    assert seen == expected
    # Editing chunks: an editor who may not see the document gets the same 404.
    patch = client.patch(
        f"/api/v1/chunks/{chunk.pk}",
        {"enabled": True},
        content_type="application/json",
        **headers["E"],
    )
    assert patch.status_code == 404


@pytest.mark.models
def test_recall_applies_the_restriction_before_ranking(world):
    from retrieval.services import recall

    kb, users, group = world
    ingest_texts(kb, TEXTS)
    secret = _restrict(kb, users, group)
    for key, user in users.items():
        found = recall(knowledge_bases=[kb], query=QUESTION, k=2, user=user)
        documents = {c.document_id for c in found}
        # The vault passage is the nearest; A still gets k candidates from what A may see.
        assert len(found) == 2, key
        assert (secret.pk in documents) == (key in ALLOWED), key


@pytest.mark.models
def test_stored_conversation_sources_follow_a_later_restriction(world, client, settings):
    settings.OPENAI_BASE_URL = ""
    kb, users, group = world
    ingest_texts(kb, TEXTS)
    headers = _token(users["A"])
    done = client.post(
        "/api/v1/chat",
        {"question": QUESTION, "knowledge_bases": [kb.pk]},
        content_type="application/json",
        **headers,
    ).json()
    conversation = f"/api/v1/conversations/{done['conversation_id']}"
    assert SECRET_NAME in json.dumps(client.get(conversation, **headers).json()["messages"])
    _restrict(kb, users, group)
    messages = client.get(conversation, **headers).json()["messages"]
    assert SECRET_NAME not in json.dumps([m["sources"] for m in messages])


def test_restricted_documents_never_train_the_reranker(world):
    from chat.models import Conversation, Feedback, Message
    from chat.selectors import feedback_for_training
    from retrieval.training.pairs import weak_queries_from_knowledge_base

    kb, users, group = world
    _bare_documents(kb)
    secret = _restrict(kb, users, group)
    chunks = {
        d.original_name: Chunk.objects.create(
            knowledge_base=kb, document=d, ordinal=0, text=TEXTS[d.original_name], heading_path="H"
        )
        for d in kb.documents.all()
    }
    weak = weak_queries_from_knowledge_base(kb)
    trained = set().union(*(q.positive_chunk_ids for q in weak))
    assert chunks[SECRET_NAME].pk not in trained and chunks["parking.md"].pk in trained
    conversation = Conversation.objects.create(user=users["B"])
    conversation.knowledge_bases.set([kb])
    sources = [
        {"n": n, "chunk_id": c.pk, "document_id": c.document_id, "text": c.text}
        for n, c in enumerate((chunks[SECRET_NAME], chunks["parking.md"]), start=1)
    ]
    message = Message.objects.create(
        conversation=conversation,
        role="assistant",
        question=QUESTION,
        content="The code is 4417 [1]. Park north [2].",
        sources=sources,
    )
    Feedback.objects.create(message=message, user=users["B"], rating=1)
    passages = [p for _, pos, neg in feedback_for_training(knowledge_base=kb) for p in pos + neg]
    assert passages == [TEXTS["parking.md"]]
    assert secret.restricted
