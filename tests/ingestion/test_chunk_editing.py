"""Chunk management (#15): editors edit, disable, add and delete chunks and attach questions;
every write re-indexes at once, a disabled chunk is never recalled, and a re-ingest warns
that it replaces the edits. Real PostgreSQL; the hashing embedder (a deterministic bag of
words) stands in for the models except in the one test marked `models`."""

import pytest
from django.urls import reverse

from ingestion.chunk_editing import (
    ChunkEditError,
    DocumentBusy,
    chunk_add,
    chunk_delete,
    chunk_update,
    manual_edits,
)
from ingestion.models import Chunk, ChunkEmbedding, Document, DocumentStatus, Membership, Role
from ingestion.services import document_enqueue, documents_ingest_batch
from ragapp.models import ApiToken
from retrieval.backends import get_embedder
from retrieval.recall import absent_words, dense_search, keyword_search
from retrieval.services import recall
from tests.conftest import ingest_texts, make_chunk

pytestmark = pytest.mark.django_db

HASHING = {"BACKEND": "retrieval.embedders.HashingEmbedder", "DIMENSION": 64, "OPTIONS": {}}

GUIDE = """# Maintenance

Vacuum reclaims storage occupied by dead tuples after updates and deletes.

## Indexes

A btree index speeds up equality and range lookups on sortable columns.

## Backups

The pg_dump utility writes a consistent snapshot of one database to a file.
"""


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def kb(owner, make_kb, settings):
    settings.RAG_EMBEDDERS = {**settings.RAG_EMBEDDERS, "hash": HASHING}
    kb = make_kb(owner, "manuals", embedders=["hash"])
    return ingest_texts(kb, {"guide.md": GUIDE, "other.md": "# Other\n\nTablespaces hold files."})


@pytest.fixture
def guide(kb):
    document = kb.documents.get(original_name="guide.md")
    assert document.status == DocumentStatus.READY, document.error
    return document


def chunk_with(document, word: str) -> Chunk:
    return document.chunks.get(is_parent=False, text__contains=word)


def keyword_ids(kb, query: str) -> list[int]:
    return [h.chunk_id for h in keyword_search(knowledge_bases=[kb], query=query, k=10)]


def dense_ids(kb, query: str) -> list[int]:
    vector = get_embedder("hash").embed_query(query)
    return [
        h.chunk_id
        for h in dense_search(knowledge_bases=[kb], embedder="hash", vector=vector, k=10)
        if h.score > 0
    ]


# --- the service ---------------------------------------------------------------------------


def test_editing_text_reembeds_and_reindexes_at_once(kb, guide):
    chunk = chunk_with(guide, "Vacuum")
    assert chunk.pk in keyword_ids(kb, "reclaims") and chunk.pk in dense_ids(kb, "reclaims")
    before = ChunkEmbedding.objects.get(chunk=chunk).embedding

    updated = chunk_update(chunk=chunk, text="Autovacuum zeppelin freezes old transaction ids.")

    assert updated.text.startswith("Autovacuum zeppelin") and updated.edited
    assert updated.search_length == len(updated.search_text.split()) > 0
    assert "zeppelin" in updated.search_text and "reclaims" not in updated.search_text
    assert updated.token_count == get_embedder("hash").count_tokens(updated.text)
    assert keyword_ids(kb, "zeppelin") == [chunk.pk]
    assert dense_ids(kb, "zeppelin")[0] == chunk.pk
    assert chunk.pk not in keyword_ids(kb, "reclaims") and chunk.pk not in dense_ids(kb, "reclaims")
    vectors = ChunkEmbedding.objects.filter(chunk=chunk)
    assert vectors.count() == 1 and list(vectors[0].embedding) != list(before)
    assert absent_words(knowledge_bases=[kb], query="zeppelin") == ([], 1)


def test_a_disabled_chunk_is_never_recalled_until_enabled_again(kb, guide):
    chunk = chunk_with(guide, "btree")
    assert chunk.pk in keyword_ids(kb, "btree") and chunk.pk in dense_ids(kb, "btree")

    chunk_update(chunk=chunk, enabled=False)

    assert chunk.pk not in keyword_ids(kb, "btree")
    assert chunk.pk not in dense_ids(kb, "btree")
    assert absent_words(knowledge_bases=[kb], query="btree") == (["btree"], 1)
    recalled = recall(knowledge_bases=[kb], query="btree index lookups", k=20)
    assert recalled and chunk.pk not in [c.chunk_id for c in recalled]
    assert manual_edits(document=guide) == 1

    chunk_update(chunk=chunk, enabled=True)
    assert chunk.pk in keyword_ids(kb, "btree") and chunk.pk in dense_ids(kb, "btree")
    assert chunk.pk in [c.chunk_id for c in recall(knowledge_bases=[kb], query="btree", k=20)]


def test_questions_are_indexed_and_embedded_with_the_chunk(kb, guide):
    chunk = chunk_with(guide, "pg_dump")
    assert chunk.pk not in keyword_ids(kb, "safeguard")

    updated = chunk_update(chunk=chunk, questions=["  How do I safeguard my data? ", "", "archive"])

    assert updated.questions == ["How do I safeguard my data?", "archive"]
    assert updated.text == chunk.text  # the text itself is unchanged
    assert keyword_ids(kb, "safeguard") == [chunk.pk]
    assert dense_ids(kb, "How do I safeguard my data? archive")[0] == chunk.pk
    assert updated.embed_text.endswith("How do I safeguard my data?\narchive")
    # Removing them removes the match again.
    chunk_update(chunk=updated, questions=[])
    assert keyword_ids(kb, "safeguard") == []


def test_add_appends_a_searchable_chunk_and_delete_removes_it_with_its_vectors(kb, guide):
    last = guide.chunks.order_by("-ordinal").first().ordinal
    added = chunk_add(document=guide, text="Replication slots retain write-ahead log segments.")

    assert added.ordinal == last + 1 and added.parent_id is None and added.page is None
    assert added.heading_path == "Maintenance"  # the document's first heading
    assert added.edited and added.enabled and not added.is_parent
    assert keyword_ids(kb, "replication") == [added.pk]
    assert dense_ids(kb, "replication slots")[0] == added.pk
    assert ChunkEmbedding.objects.filter(chunk=added).count() == 1
    assert manual_edits(document=guide) == 1

    chunk_delete(chunk=added)
    assert not Chunk.objects.filter(pk=added.pk).exists()
    assert not ChunkEmbedding.objects.filter(chunk_id=added.pk).exists()
    assert keyword_ids(kb, "replication") == []
    guide.refresh_from_db()
    assert manual_edits(document=guide) == 1  # the deletion is an edit a re-ingest undoes

    chunk_delete(chunk=chunk_with(guide, "Vacuum"))
    guide.refresh_from_db()
    assert manual_edits(document=guide) == 2 and keyword_ids(kb, "reclaims") == []


def test_a_parent_follows_the_edited_text_of_its_child(kb, guide):
    child = chunk_with(guide, "btree")
    parent = make_chunk(kb, guide, 1000, "Intro.\n\n" + child.text + "\n\nOutro.", is_parent=True)
    Chunk.objects.filter(pk=child.pk).update(parent=parent)
    child.refresh_from_db()

    chunk_update(chunk=child, text="A hash index answers equality only.")
    parent.refresh_from_db()
    assert parent.text == "Intro.\n\nA hash index answers equality only.\n\nOutro."
    context = recall(knowledge_bases=[kb], query="hash equality", k=5, dense=False)[0].context
    assert "A hash index answers equality only." in context and "btree" not in context


def test_edits_are_validated_and_refused_while_the_document_is_processed(kb, guide):
    chunk = chunk_with(guide, "Vacuum")
    for bad in ("   ", "x" * 20_001, "nul\x00"):
        with pytest.raises(ChunkEditError):
            chunk_update(chunk=chunk, text=bad)
    with pytest.raises(ChunkEditError):
        chunk_update(chunk=chunk, questions=[f"q{i}" for i in range(21)])
    with pytest.raises(ChunkEditError):
        chunk_update(chunk=chunk, questions=["q" * 501])
    Document.objects.filter(pk=guide.pk).update(status=DocumentStatus.EMBEDDING)
    with pytest.raises(DocumentBusy):
        chunk_update(chunk=chunk, text="new text")
    with pytest.raises(DocumentBusy):
        chunk_add(document=guide, text="new text")
    chunk.refresh_from_db()
    assert "Vacuum" in chunk.text and not chunk.edited


def test_reingest_replaces_the_edits_and_resets_the_count(kb, guide):
    chunk_update(chunk=chunk_with(guide, "Vacuum"), text="Edited by hand.")
    chunk_add(document=guide, text="Added by hand.")
    assert manual_edits(document=guide) == 2

    document_enqueue(document=guide, force=True)
    documents_ingest_batch(document_ids=[guide.pk])

    guide.refresh_from_db()
    assert guide.status == DocumentStatus.READY and manual_edits(document=guide) == 0
    assert chunk_with(guide, "Vacuum") and not guide.chunks.filter(text__contains="by hand")


# --- the API -------------------------------------------------------------------------------


@pytest.fixture
def api(client):
    class Api:
        def __init__(self, user):
            self.headers = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user, 't')[1]}"}

        def get(self, path):
            return client.get("/api/v1" + path, **self.headers)

        def post(self, path, data):
            return client.post(
                "/api/v1" + path, data, content_type="application/json", **self.headers
            )

        def patch(self, path, data):
            return client.patch(
                "/api/v1" + path, data, content_type="application/json", **self.headers
            )

        def delete(self, path):
            return client.delete("/api/v1" + path, **self.headers)

    return Api


NOT_FOUND = {"error": {"code": "not_found", "message": "Not found."}}


def test_api_lists_searches_and_edits_chunks(api, owner, kb, guide):
    as_owner = api(owner)
    listing = as_owner.get(f"/documents/{guide.pk}/chunks").json()
    children = list(guide.chunks.filter(is_parent=False).order_by("ordinal"))
    assert listing["count"] == len(children) >= 3
    first = listing["items"][0]
    assert set(first) == {
        "id",
        "ordinal",
        "text",
        "heading",
        "page",
        "sheet",
        "slide",
        "kind",
        "token_count",
        "parent_id",
        "enabled",
        "questions",
        "edited",
    }
    assert first["id"] == children[0].pk and first["enabled"] is True and first["questions"] == []
    page = as_owner.get(f"/documents/{guide.pk}/chunks?offset=1&limit=1").json()
    assert page["count"] == len(children) and [c["id"] for c in page["items"]] == [children[1].pk]
    found = as_owner.get(f"/documents/{guide.pk}/chunks?q=PG_DUMP").json()
    assert found["count"] == 1 and "pg_dump" in found["items"][0]["text"]

    chunk_id = found["items"][0]["id"]
    patched = as_owner.patch(
        f"/chunks/{chunk_id}", {"text": "Barman streams backups.", "questions": ["How to back up?"]}
    )
    assert patched.status_code == 200, patched.content
    body = patched.json()
    assert body["text"] == "Barman streams backups." and body["questions"] == ["How to back up?"]
    assert body["enabled"] is True and body["edited"] is True
    assert keyword_ids(kb, "barman") == [chunk_id]
    disabled = as_owner.patch(f"/chunks/{chunk_id}", {"enabled": False}).json()
    assert disabled["enabled"] is False and disabled["text"] == "Barman streams backups."
    assert keyword_ids(kb, "barman") == []

    added = as_owner.post(f"/documents/{guide.pk}/chunks", {"text": "Logical decoding."})
    assert added.status_code == 201 and added.json()["text"] == "Logical decoding."
    assert keyword_ids(kb, "decoding") == [added.json()["id"]]
    assert as_owner.delete(f"/chunks/{added.json()['id']}").status_code == 204
    assert as_owner.delete(f"/chunks/{added.json()['id']}").json() == NOT_FOUND

    document = as_owner.get(f"/documents/{guide.pk}").json()
    assert document["manual_edits"] == 2  # one edited chunk, one deleted
    listed = as_owner.get(f"/knowledge-bases/{kb.pk}/documents").json()["items"]
    assert {d["name"]: d["manual_edits"] for d in listed} == {"guide.md": 2, "other.md": 0}
    reingest = as_owner.post(f"/documents/{guide.pk}/reingest", {})
    assert reingest.status_code == 202 and reingest.json()["manual_edits"] == 2


def test_api_refuses_invalid_edits(api, owner, guide):
    as_owner = api(owner)
    chunk = chunk_with(guide, "Vacuum")
    for payload in (
        {"text": ""},
        {"text": "x" * 20_001},
        {"text": "nul\u0000"},
        {"questions": ["q"] * 21},
        {"questions": ["q" * 501]},
        {"enabled": "maybe"},
    ):
        response = as_owner.patch(f"/chunks/{chunk.pk}", payload)
        assert response.status_code == 422, payload
        assert response.json()["error"]["code"] == "invalid"
    blank = as_owner.patch(f"/chunks/{chunk.pk}", {"text": "   "})
    assert blank.status_code == 422 and blank.json()["error"]["code"] == "invalid"
    assert as_owner.post(f"/documents/{guide.pk}/chunks", {"text": ""}).status_code == 422
    Document.objects.filter(pk=guide.pk).update(status=DocumentStatus.PARSING)
    busy = as_owner.patch(f"/chunks/{chunk.pk}", {"text": "later"})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "conflict"
    chunk.refresh_from_db()
    assert "Vacuum" in chunk.text


def test_only_editors_and_owners_write_and_others_get_the_missing_chunk_404(
    api, owner, make_user, kb, guide
):
    viewer, editor, stranger = make_user("viewer"), make_user("editor"), make_user("stranger")
    Membership.objects.create(knowledge_base=kb, user=viewer, role=Role.VIEWER)
    Membership.objects.create(knowledge_base=kb, user=editor, role=Role.EDITOR)
    chunk = chunk_with(guide, "Vacuum")
    parent = make_chunk(kb, guide, 999, "context", is_parent=True)
    n_chunks = guide.chunks.count()

    as_viewer = api(viewer)
    assert as_viewer.get(f"/documents/{guide.pk}/chunks").json()["count"] >= 3  # reads
    writes = (
        lambda a: a.patch(f"/chunks/{chunk.pk}", {"enabled": False}),
        lambda a: a.post(f"/documents/{guide.pk}/chunks", {"text": "spam"}),
        lambda a: a.delete(f"/chunks/{chunk.pk}"),
    )
    for user in (viewer, stranger):
        for write in writes:
            response = write(api(user))
            assert response.status_code == 404 and response.json() == NOT_FOUND
    assert api(stranger).get(f"/documents/{guide.pk}/chunks").json() == NOT_FOUND
    missing = api(owner).patch("/chunks/999999", {"enabled": False})
    assert missing.json() == NOT_FOUND
    assert api(owner).patch(f"/chunks/{parent.pk}", {"text": "x"}).json() == NOT_FOUND
    chunk.refresh_from_db()
    assert chunk.enabled and "Vacuum" in chunk.text and guide.chunks.count() == n_chunks

    as_editor = api(editor)
    assert as_editor.patch(f"/chunks/{chunk.pk}", {"enabled": False}).status_code == 200
    assert as_editor.post(f"/documents/{guide.pk}/chunks", {"text": "ok"}).status_code == 201


# --- the document view ---------------------------------------------------------------------


@pytest.fixture
def long_document(kb):
    document = Document.objects.create(
        knowledge_base=kb,
        original_name="long.txt",
        content_hash="c" * 64,
        status=DocumentStatus.READY,
    )
    for i in range(120):
        make_chunk(kb, document, i, f"Passage {i} " + ("needle" if i % 40 == 7 else "hay"))
    return document


def test_document_view_pages_searches_and_opens_the_page_of_the_cited_chunk(
    client, owner, long_document
):
    client.force_login(owner)
    url = reverse("document_view", args=[long_document.pk])
    first = client.get(url).content.decode()
    assert "Passage 0 hay" in first and "Passage 49 hay" in first and "Passage 50" not in first
    assert "Page 1 of 3" in first and 'class="chunk-number">#50<' in first

    cited = long_document.chunks.get(ordinal=75)
    page = client.get(f"{url}?chunk={cited.pk}").content.decode()
    assert "Page 2 of 3" in page
    assert f'id="chunk-{cited.pk}" class="passage highlight"' in page

    found = client.get(f"{url}?q=NEEDLE").content.decode()
    assert found.count('<div id="chunk-') == 3 and ">#48<" in found  # numbers as in the document
    assert "Passage 7 needle" in found and "Passage 87 needle" in found
    assert client.get(f"{url}?q=needle&page=2").status_code == 200  # past the end: last page
    assert client.get(f"{url}?q=nee%00dle&chunk=x").status_code == 200


def test_document_view_edits_for_editors_only(client, owner, make_user, kb, guide):
    viewer = make_user("viewer")
    Membership.objects.create(knowledge_base=kb, user=viewer, role=Role.VIEWER)
    chunk = chunk_with(guide, "Vacuum")
    view = reverse("document_view", args=[guide.pk])

    client.force_login(viewer)
    html = client.get(view).content.decode()
    assert "Vacuum" in html and reverse("chunk_edit", args=[chunk.pk]) not in html
    for url, data in (
        (reverse("chunk_edit", args=[chunk.pk]), {"enabled": "0"}),
        (reverse("chunk_delete", args=[chunk.pk]), {}),
        (reverse("chunk_add", args=[guide.pk]), {"text": "spam"}),
    ):
        assert client.post(url, data).status_code == 404
    chunk.refresh_from_db()
    assert chunk.enabled

    client.force_login(owner)
    html = client.get(view).content.decode()
    assert reverse("chunk_edit", args=[chunk.pk]) in html and "js/chunks.js" in html
    response = client.post(
        reverse("chunk_edit", args=[chunk.pk]),
        {"text": "Freezing prevents wraparound.", "questions": "What is wraparound?\r\nxid"},
    )
    assert response.status_code == 302 and f"chunk={chunk.pk}" in response["Location"]
    chunk.refresh_from_db()
    assert chunk.text == "Freezing prevents wraparound."
    assert chunk.questions == ["What is wraparound?", "xid"]
    client.post(reverse("chunk_edit", args=[chunk.pk]), {"enabled": "0"})
    chunk.refresh_from_db()
    assert not chunk.enabled and "disabled" in client.get(view).content.decode()
    client.post(reverse("chunk_add", args=[guide.pk]), {"text": "Hand-written note."})
    assert guide.chunks.filter(text="Hand-written note.").exists()
    html = client.get(view).content.decode()
    assert "re-ingest replaces them" in html
    documents = client.get(reverse("kb_documents", args=[kb.pk])).json()["documents"]
    assert {d["name"]: d["manual_edits"] for d in documents} == {"guide.md": 2, "other.md": 0}
    client.post(reverse("chunk_delete", args=[chunk.pk]), {"next": view})
    assert not Chunk.objects.filter(pk=chunk.pk).exists()


# --- with the real models ------------------------------------------------------------------


@pytest.mark.models
def test_questions_let_recall_match_a_paraphrase_and_disabled_chunks_leave_search(
    api, owner, make_kb
):
    kb = ingest_texts(make_kb(owner, "real", embedders=["minilm"]), {"guide.md": GUIDE})
    document = kb.documents.get()
    chunk = chunk_with(document, "pg_dump")
    question = "How can I keep a spare copy of everything in case the server breaks?"
    paraphrase = "what should I do so that I do not lose everything if the server breaks"
    before = recall(knowledge_bases=[kb], query=paraphrase, k=5, keyword=False)
    assert before[0].chunk_id != chunk.pk  # the text alone does not answer it

    chunk_update(chunk=chunk, questions=[question])

    recalled = recall(knowledge_bases=[kb], query=paraphrase, k=5, keyword=False)
    assert recalled[0].chunk_id == chunk.pk

    as_owner = api(owner)
    search = {"knowledge_bases": [kb.pk], "query": "pg_dump snapshot", "reranker": "none"}
    assert chunk.pk in [r["chunk_id"] for r in as_owner.post("/search", search).json()["results"]]
    as_owner.patch(f"/chunks/{chunk.pk}", {"enabled": False})
    assert chunk.pk not in [
        r["chunk_id"] for r in as_owner.post("/search", search).json()["results"]
    ]
