"""The HTTP API: every endpoint, its permissions, errors, and the OpenAI-compatible endpoint
through the official openai client against a live server."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from chat.fake_llm import FakeLLM
from ingestion.models import Document, DocumentStatus
from ingestion.services import document_create, documents_ingest_batch
from ragapp.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def token(alice):
    return ApiToken.issue(alice, "test")[1]


@pytest.fixture
def api(client, token):
    class Api:
        def __init__(self, raw):
            self.headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}

        def get(self, path, **kw):
            return client.get("/api/v1" + path, **kw, **self.headers)

        def post(self, path, data=None, **kw):
            has_files = any(
                isinstance(v, list) and v and isinstance(v[0], SimpleUploadedFile)
                for v in (data or {}).values()
            )
            if not has_files:
                kw["content_type"] = "application/json"
            return client.post("/api/v1" + path, data, **kw, **self.headers)

        def patch(self, path, data):
            return client.patch(
                "/api/v1" + path, data, content_type="application/json", **self.headers
            )

        def delete(self, path):
            return client.delete("/api/v1" + path, **self.headers)

    return Api(token)


def test_tokens_are_hashed_and_revocable(alice):
    out = io.StringIO()
    call_command("api_token", "alice", stdout=out)
    raw = out.getvalue().strip()
    assert raw.startswith("rag_")
    stored = ApiToken.objects.get(user=alice)
    assert raw not in (stored.key_hash, stored.key_prefix) and stored.key_hash == ApiToken.hash(raw)
    assert ApiToken.authenticate(raw).user == alice
    from django.utils import timezone

    stored.revoked_at = timezone.now()
    stored.save()
    assert ApiToken.authenticate(raw) is None


def test_auth_is_required_with_json_errors(client):
    response = client.get("/api/v1/knowledge-bases")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    bad = client.get("/api/v1/knowledge-bases", HTTP_AUTHORIZATION="Bearer rag_nope")
    assert bad.status_code == 401


def test_knowledge_base_crud_and_members(api, make_user):
    bob = make_user("bob")
    created = api.post("/knowledge-bases", {"name": "Manuals", "description": "d"})
    assert created.status_code == 201
    kb_id = created.json()["id"]
    assert [kb["name"] for kb in api.get("/knowledge-bases").json()] == ["Manuals"]
    assert api.get(f"/knowledge-bases/{kb_id}").json()["role"] == "owner"
    assert api.patch(f"/knowledge-bases/{kb_id}", {"name": "Docs"}).json()["name"] == "Docs"
    assert api.patch(f"/knowledge-bases/{kb_id}", {"reranker": "nope"}).status_code == 400
    assert (
        api.post(
            f"/knowledge-bases/{kb_id}/members", {"username": "bob", "role": "viewer"}
        ).status_code
        == 201
    )
    members = api.get(f"/knowledge-bases/{kb_id}/members").json()
    assert {"username": "bob", "role": "viewer"} in members
    assert (
        api.post(
            f"/knowledge-bases/{kb_id}/members", {"username": "bob", "role": "boss"}
        ).status_code
        == 422
    )
    assert api.delete(f"/knowledge-bases/{kb_id}/members/bob").status_code == 204
    assert bob.kb_memberships.count() == 0
    assert api.post("/knowledge-bases", {"name": ""}).json()["error"]["code"] == "invalid"
    assert api.delete(f"/knowledge-bases/{kb_id}").status_code == 204
    assert api.get(f"/knowledge-bases/{kb_id}").status_code == 404


def test_another_users_token_sees_nothing(api, make_user, make_kb, client):
    bob = make_user("bob")
    kb = make_kb(bob, "bob's")
    doc = Document.objects.create(knowledge_base=kb, original_name="x.txt", content_hash="b" * 64)
    for path in (
        f"/knowledge-bases/{kb.pk}",
        f"/knowledge-bases/{kb.pk}/documents",
        f"/knowledge-bases/{kb.pk}/members",
        f"/documents/{doc.pk}",
        f"/documents/{doc.pk}/chunks",
    ):
        response = api.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}
    assert api.delete(f"/documents/{doc.pk}").status_code == 404
    assert api.post("/search", {"knowledge_bases": [kb.pk], "query": "x"}).status_code == 404
    assert api.post("/chat", {"knowledge_bases": [kb.pk], "question": "x"}).status_code == 404
    # Same answer as for an id that does not exist: nothing leaks.
    assert api.get("/knowledge-bases/999999").json() == api.get(f"/knowledge-bases/{kb.pk}").json()


def test_documents_upload_list_chunks_reingest_delete(api, settings):
    settings.RAG_MAX_UPLOAD_BYTES = 1000
    kb_id = api.post("/knowledge-bases", {"name": "K"}).json()["id"]
    files = [SimpleUploadedFile("a.txt", b"alpha beta"), SimpleUploadedFile("b.exe", b"MZ")]
    response = api.post(f"/knowledge-bases/{kb_id}/documents", {"files": files})
    assert response.status_code == 201
    body = response.json()
    assert [d["name"] for d in body["accepted"]] == ["a.txt"]
    assert "not supported" in body["refused"][0]["error"]
    big = api.post(
        f"/knowledge-bases/{kb_id}/documents", {"files": [SimpleUploadedFile("c.txt", b"x" * 2000)]}
    )
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    doc_id = body["accepted"][0]["id"]
    listing = api.get(f"/knowledge-bases/{kb_id}/documents?status=queued&limit=10").json()
    assert listing["count"] == 1 and listing["items"][0]["id"] == doc_id
    assert api.get(f"/knowledge-bases/{kb_id}/documents?status=ready").json()["count"] == 0
    assert api.get(f"/documents/{doc_id}").json()["status"] == "queued"
    assert api.post(f"/documents/{doc_id}/reingest").status_code == 202
    url = api.post(f"/knowledge-bases/{kb_id}/documents/url", {"url": "https://example.com/a.html"})
    assert url.status_code == 201 and url.json()["source_url"] == "https://example.com/a.html"
    assert api.delete(f"/documents/{doc_id}").status_code == 204
    assert not Document.objects.filter(pk=doc_id).exists()


def test_rate_limit(api, settings):
    settings.RAG_API_RATE_LIMIT_PER_MINUTE = 3
    from django.core.cache import cache

    cache.clear()
    codes = [api.get("/knowledge-bases").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429
    response = api.get("/knowledge-bases")
    assert response.json()["error"]["code"] == "rate_limited" and int(response["Retry-After"]) > 0


def test_openapi_and_docs(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/search", "/api/v1/chat", "/api/v1/knowledge-bases"} <= set(schema["paths"])
    assert client.get("/api/v1/docs").status_code == 200


@pytest.fixture
def ready_kb(alice, make_kb):
    kb = make_kb(alice, "manuals")
    ids = []
    for name, text in {
        "backup.md": "# Backup\n\npg_dump writes a consistent backup of one database.",
        "vacuum.md": "# Vacuum\n\nVACUUM reclaims storage occupied by dead tuples.",
    }.items():
        ids.append(
            document_create(
                knowledge_base=kb, fileobj=io.BytesIO(text.encode()), name=name, enqueue=False
            ).document.pk
        )
    documents_ingest_batch(document_ids=ids)
    assert set(kb.documents.values_list("status", flat=True)) == {DocumentStatus.READY}
    return kb


@pytest.mark.models
def test_search_and_chat_and_conversations(api, ready_kb, settings):
    settings.OPENAI_BASE_URL = ""
    found = api.post("/search", {"knowledge_bases": [ready_kb.pk], "query": "dead tuples"}).json()
    top = found["results"][0]
    assert top["document"] == "vacuum.md" and top["heading"] == "Vacuum"
    assert set(top["signals"]) >= {"keyword"} and "recall" in found["timings_ms"]
    answer = api.post(
        "/chat", {"knowledge_bases": [ready_kb.pk], "question": "What does VACUUM reclaim?"}
    )
    data = answer.json()
    assert data["mode"] == "extractive" and data["sources"][0]["document"] == "vacuum.md"
    assert set(data["timings_ms"]) >= {"recall", "rerank", "total"}
    streamed = api.post(
        "/chat",
        {"conversation_id": data["conversation_id"], "question": "And pg_dump?", "stream": True},
    )
    body = b"".join(streamed.streaming_content).decode()
    assert "event: done" in body
    conversations = api.get("/conversations").json()
    assert conversations[0]["id"] == data["conversation_id"]
    detail = api.get(f"/conversations/{data['conversation_id']}").json()
    assert len(detail["messages"]) == 4
    assert api.delete(f"/conversations/{data['conversation_id']}").status_code == 204
    assert api.get(f"/conversations/{data['conversation_id']}").status_code == 404


@pytest.mark.models
@pytest.mark.django_db(transaction=True)
def test_openai_client_against_the_running_server(live_server, ready_kb, alice, settings):
    import openai

    llm = FakeLLM().start()
    llm.reply = lambda messages: "pg_dump writes a consistent backup [1]."
    settings.OPENAI_BASE_URL = llm.base_url
    try:
        raw = ApiToken.issue(alice)[1]
        client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key=raw)
        models = [m.id for m in client.models.list()]
        assert models == [f"kb-{ready_kb.pk}"]
        completion = client.chat.completions.create(
            model=f"kb-{ready_kb.pk}", messages=[{"role": "user", "content": "How do I back up?"}]
        )
        assert "[1]" in completion.choices[0].message.content
        sources = completion.model_extra["sources"]
        assert sources[0]["document"] == "backup.md"
        stream = client.chat.completions.create(
            model=f"kb-{ready_kb.pk}",
            stream=True,
            messages=[{"role": "user", "content": "How do I back up?"}],
        )
        parts, final_sources = [], None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if (chunk.model_extra or {}).get("sources"):
                final_sources = chunk.model_extra["sources"]
        assert "".join(parts) == "pg_dump writes a consistent backup [1]."
        assert final_sources and final_sources[0]["document"] == "backup.md"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="kb-999999", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="wrong").models.list()
    finally:
        llm.stop()


def test_tokens_page_creates_lists_and_revokes(client, alice):
    client.force_login(alice)
    page = client.post("/accounts/tokens/", {"name": "ci"})
    raw = page.context["new_token"]
    assert raw.startswith("rag_") and raw in page.content.decode()
    token = ApiToken.objects.get(user=alice)
    assert token.name == "ci" and ApiToken.authenticate(raw) == token
    listing = client.get("/accounts/tokens/").content.decode()
    assert token.key_prefix in listing and raw not in listing
    client.post("/accounts/tokens/", {"revoke": token.pk})
    assert ApiToken.authenticate(raw) is None


def test_nul_characters_are_refused_not_a_server_error(api):
    # Found by the schema fuzzer: PostgreSQL text cannot hold NUL.
    response = api.post("/knowledge-bases", {"name": "a\x00b"})
    assert response.status_code == 422
    kb_id = api.post("/knowledge-bases", {"name": "ok"}).json()["id"]
    assert api.get(f"/knowledge-bases/{kb_id}/documents?status=re%00ady").status_code == 400
    assert api.delete(f"/knowledge-bases/{kb_id}/members/a%00b").status_code == 404
