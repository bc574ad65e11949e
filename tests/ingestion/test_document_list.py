"""Ten thousand documents in one knowledge base (issue #15 part 3): the documents list is
paginated on the server with search by name, status and type filters and sorting; editors
and owners re-ingest or delete a selection; the portal's progress poll asks only about the
rows on its page. Sixty rows written directly stand in for the ten thousand."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from curation.faq import faq_add, faq_document
from ingestion.models import (
    Chunk,
    Document,
    DocumentStatus,
    KnowledgeBase,
    Membership,
    ReviewStatus,
    Role,
)
from ragapp.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db

N = 60
EXTENSIONS = ("pdf", "docx", "md")
STATUSES = (
    DocumentStatus.READY,
    DocumentStatus.READY,
    DocumentStatus.FAILED,
    DocumentStatus.QUEUED,
    DocumentStatus.PARSING,
)


def _name(i: int) -> str:
    topic = "Report" if i % 4 == 0 else "notes"
    return f"{topic}-{i:03d}.{EXTENSIONS[i % 3]}"


@pytest.fixture
def world(make_user, make_kb):
    owner = make_user("olga")
    kb = make_kb(owner, "archive")
    users = {"owner": owner}
    for role in (Role.VIEWER, Role.CONTRIBUTOR, Role.EDITOR):
        users[role] = make_user(role)
        Membership.objects.create(knowledge_base=kb, user=users[role], role=role)
    docs = Document.objects.bulk_create(
        Document(
            knowledge_base=kb,
            original_name=_name(i),
            content_hash=f"h{i}",
            size=1000 + (i * 37) % 500,
            page_count=None if i % 10 == 0 else (i * 7) % 23,
            status=STATUSES[i % 5],
            progress=100 if STATUSES[i % 5] == DocumentStatus.READY else 30,
        )
        for i in range(N)
    )
    base = timezone.now() - timedelta(days=1)
    for i, doc in enumerate(docs):
        Document.objects.filter(pk=doc.pk).update(created_at=base + timedelta(minutes=i))
    Chunk.objects.bulk_create(
        Chunk(document=doc, knowledge_base=kb, ordinal=k, text=f"chunk {k}")
        for doc in docs[:5]
        for k in range(3)
    )
    return kb, users, [Document.objects.get(pk=d.pk) for d in docs]


def _page(client, kb, **params):
    response = client.get(reverse("kb_detail", args=[kb.pk]), params)
    assert response.status_code == 200
    return response


def _names(response) -> list[str]:
    return [d.original_name for d in response.context["documents"]]


def _token(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(user, 't')[1]}"}


# --- pagination, search, filters and sorting -------------------------------------------------


def test_pages_are_newest_first_and_cover_every_document_once(client, world):
    kb, users, docs = world
    client.force_login(users["owner"])
    first = _page(client, kb, per_page=25)
    assert len(first.context["documents"]) == 25
    assert _names(first)[0] == _name(N - 1)  # newest first
    seen = []
    for number in (1, 2, 3):
        seen += [d.pk for d in _page(client, kb, per_page=25, page=number).context["documents"]]
    assert sorted(seen) == sorted(d.pk for d in docs)
    last = _page(client, kb, per_page=25, page=3)
    assert len(last.context["documents"]) == 10
    assert b"Page 3 of 3" in last.content
    # Out of range or garbage: the nearest page, not an error.
    assert _page(client, kb, per_page=25, page=99).context["page"].number == 3
    assert _page(client, kb, page="x").context["page"].number == 1
    # The rows carry their chunk counts, counted for the page only.
    rows = {d.pk: d for d in _page(client, kb, sort="date", per_page=25).context["documents"]}
    assert rows[docs[0].pk].n_chunks == 3 and rows[docs[10].pk].n_chunks == 0


def test_search_matches_part_of_the_name_in_any_case(client, world):
    kb, users, docs = world
    client.force_login(users["owner"])
    response = _page(client, kb, q="rEpOrT", per_page=100)
    expected = {_name(i) for i in range(N) if i % 4 == 0}
    assert set(_names(response)) == expected
    assert response.context["page"].paginator.count == len(expected)
    assert _names(_page(client, kb, q="-007.")) == [_name(7)]
    assert _names(_page(client, kb, q="nothing-like-this")) == []
    assert b"No document matches." in _page(client, kb, q="nothing-like-this").content


def test_status_and_type_filters_combine_with_the_search(client, world):
    kb, users, docs = world
    client.force_login(users["owner"])
    failed = _page(client, kb, status="failed", per_page=100)
    assert {d.status for d in failed.context["documents"]} == {"failed"}
    assert len(failed.context["documents"]) == N // 5
    pdfs = _page(client, kb, type="PDF", per_page=100)
    assert all(n.endswith(".pdf") for n in _names(pdfs)) and len(_names(pdfs)) == N // 3
    both = _page(client, kb, q="report", type="pdf", status="ready", per_page=100)
    assert set(_names(both)) == {
        _name(i) for i in range(N) if i % 4 == 0 and i % 3 == 0 and STATUSES[i % 5] == "ready"
    }
    # The filter shows how many documents each state holds.
    counts = failed.context["counts"]
    assert counts["all"] == N and counts["failed"] == N // 5 and counts["ready"] == 2 * N // 5


def test_contributions_waiting_for_review_are_their_own_filter(client, world):
    kb, users, docs = world
    Document.objects.filter(pk=docs[3].pk).update(review_status=ReviewStatus.PENDING)
    client.force_login(users["owner"])
    assert _names(_page(client, kb, status="pending")) == [docs[3].original_name]
    # Not "queued" for ingestion, although its pipeline status is queued.
    assert docs[3].original_name not in _names(_page(client, kb, status="queued", per_page=100))
    assert _page(client, kb).context["counts"]["pending"] == 1


@pytest.mark.parametrize("sort", ["name", "-name", "size", "-size", "date", "-date", "pages"])
def test_sorting_orders_the_whole_list_not_only_the_page(client, world, sort):
    kb, users, docs = world
    client.force_login(users["owner"])
    listed = []
    for number in (1, 2, 3):
        response = _page(client, kb, sort=sort, per_page=25, page=number)
        listed += list(response.context["documents"])
    key = {
        "name": lambda d: (d.original_name.lower(), d.pk),
        "size": lambda d: (d.size, d.pk),
        "date": lambda d: (d.created_at, d.pk),
        "pages": lambda d: (d.page_count is None, d.page_count or 0, d.pk),
    }[sort.lstrip("-")]
    expected = sorted(docs, key=key, reverse=sort.startswith("-"))
    assert [d.pk for d in listed] == [d.pk for d in expected]


def test_status_sort_follows_the_pipeline_and_headers_toggle(client, world):
    kb, users, docs = world
    client.force_login(users["owner"])
    response = _page(client, kb, sort="status", per_page=100)
    order = ["queued", "parsing", "embedding", "ready", "failed"]
    statuses = [d.status for d in response.context["documents"]]
    assert statuses == sorted(statuses, key=order.index)
    columns = response.context["columns"]
    assert columns["status"]["aria_sort"] == "ascending"
    assert "sort=-status" in columns["status"]["url"]
    assert "sort=name" in columns["name"]["url"]
    # Sorting keeps the filters and starts again at page 1.
    response = _page(client, kb, q="report", status="ready", sort="name", page=2)
    url = response.context["columns"]["size"]["url"]
    assert "q=report" in url and "status=ready" in url and "page=" not in url


def test_bad_parameters_fall_back_on_the_page(client, world):
    kb, users, docs = world
    client.force_login(users["owner"])
    response = _page(client, kb, status="nope", sort="drop table", type="p/d", per_page=7)
    assert response.context["query"].status == ""
    assert response.context["query"].sort == "-date"
    assert response.context["per_page"] == 50
    assert len(response.context["documents"]) == 50


# --- visibility -----------------------------------------------------------------------------


def test_restricted_documents_are_hidden_from_the_list_and_the_counts(client, world):
    kb, users, docs = world
    secret = docs[-1]
    Document.objects.filter(pk=secret.pk).update(restricted=True)
    client.force_login(users[Role.VIEWER])
    response = _page(client, kb, per_page=100)
    assert secret.original_name not in _names(response)
    assert response.context["counts"]["all"] == N - 1
    assert response.context["page"].paginator.count == N - 1
    assert _names(_page(client, kb, q=secret.original_name)) == []
    # Nor does the poll answer about it when asked by id.
    poll = client.get(reverse("kb_documents", args=[kb.pk]), {"ids": f"{secret.pk},{docs[0].pk}"})
    assert [d["id"] for d in poll.json()["documents"]] == [docs[0].pk]
    client.force_login(users["owner"])
    assert _page(client, kb).context["counts"]["all"] == N


def test_another_users_contribution_waiting_for_review_is_not_listed_to_viewers(client, world):
    kb, users, docs = world
    Document.objects.filter(pk=docs[5].pk).update(
        review_status=ReviewStatus.PENDING, uploaded_by=users[Role.CONTRIBUTOR]
    )
    client.force_login(users[Role.VIEWER])
    assert docs[5].original_name not in _names(_page(client, kb, per_page=100))
    client.force_login(users[Role.CONTRIBUTOR])
    assert docs[5].original_name in _names(_page(client, kb, status="pending"))


# --- the progress poll ----------------------------------------------------------------------


def test_poll_by_ids_answers_for_those_rows_only_in_constant_queries(client, world, make_kb):
    kb, users, docs = world
    other = make_kb(users["owner"], "other")
    stranger = Document.objects.create(knowledge_base=other, original_name="x.md", content_hash="x")
    client.force_login(users["owner"])
    url = reverse("kb_documents", args=[kb.pk])

    def poll(ids):
        with CaptureQueriesContext(connection) as queries:
            body = client.get(url, {"ids": ",".join(map(str, ids))}).json()
        return body, len(queries)

    few, few_queries = poll([docs[0].pk, docs[3].pk, stranger.pk, "junk"])
    assert [d["id"] for d in few["documents"]] == [docs[0].pk, docs[3].pk]
    assert few["documents"][0]["chunks"] == 3
    assert few["documents"][1]["queue_position"] is not None  # queued: its place in line
    many, many_queries = poll([d.pk for d in docs[:50]])
    assert len(many["documents"]) == 50
    assert many_queries <= few_queries + 1


def test_feed_without_ids_is_one_page_of_the_list(client, world):
    kb, users, docs = world
    client.force_login(users["owner"])
    body = client.get(reverse("kb_documents", args=[kb.pk]), {"q": "report", "sort": "name"})
    body = body.json()
    assert body["count"] == N // 4 and body["page"] == 1 and body["num_pages"] == 1
    names = [d["name"] for d in body["documents"]]
    assert names == sorted(names, key=str.lower)


# --- bulk actions (web) ---------------------------------------------------------------------


def _bulk(client, kb, action, ids, **extra):
    return client.post(
        reverse("kb_documents_bulk", args=[kb.pk]),
        {"action": action, "ids": [str(i) for i in ids], **extra},
    )


@pytest.mark.parametrize("role", [Role.VIEWER, Role.CONTRIBUTOR])
def test_viewers_and_contributors_get_404_and_nothing_changes(client, world, role):
    kb, users, docs = world
    client.force_login(users[role])
    assert _bulk(client, kb, "delete", [docs[0].pk]).status_code == 404
    assert _bulk(client, kb, "reingest", [docs[0].pk]).status_code == 404
    assert Document.objects.filter(knowledge_base=kb).count() == N


def test_a_stranger_gets_404(client, world, make_user):
    kb, users, docs = world
    client.force_login(make_user("mallory"))
    assert _bulk(client, kb, "delete", [docs[0].pk]).status_code == 404
    assert client.get(reverse("kb_detail", args=[kb.pk])).status_code == 404


def test_editor_deletes_a_selection_with_chunks_audit_and_back_to_the_same_page(client, world):
    kb, users, docs = world
    client.force_login(users[Role.EDITOR])
    chosen = [d.pk for d in docs[:5]]
    back = reverse("kb_detail", args=[kb.pk]) + "?q=notes&page=2"
    response = _bulk(client, kb, "delete", chosen, next=back)
    assert response.status_code == 302 and response.url == back
    assert not Document.objects.filter(pk__in=chosen).exists()
    assert not Chunk.objects.filter(document_id__in=chosen).exists()
    assert Document.objects.filter(knowledge_base=kb).count() == N - 5
    assert AuditEvent.objects.filter(action="document.delete").count() == 5
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert "5 document(s) deleted." in texts


def test_editor_cannot_touch_a_restricted_document_they_cannot_see(client, world):
    kb, users, docs = world
    secret = docs[7]
    Document.objects.filter(pk=secret.pk).update(restricted=True)
    client.force_login(users[Role.EDITOR])
    response = _bulk(client, kb, "delete", [secret.pk, docs[8].pk])
    assert Document.objects.filter(pk=secret.pk).exists()
    assert not Document.objects.filter(pk=docs[8].pk).exists()
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert "1 document(s) deleted." in texts
    assert any("1 document(s) skipped" in t for t in texts)
    # The owner sees it and may delete it.
    client.force_login(users["owner"])
    _bulk(client, kb, "delete", [secret.pk])
    assert not Document.objects.filter(pk=secret.pk).exists()


def test_reingest_queues_approved_documents_and_skips_pending_and_faq(client, world):
    kb, users, docs = world
    faq_add(knowledge_base=kb, question="Where is the office?", answer="Main street 1.")
    faq = faq_document(knowledge_base=kb)
    pending, failed = docs[3], docs[2]
    Document.objects.filter(pk=pending.pk).update(review_status=ReviewStatus.PENDING)
    client.force_login(users["owner"])
    response = _bulk(client, kb, "reingest", [failed.pk, pending.pk, faq.pk])
    failed.refresh_from_db()
    assert failed.status == DocumentStatus.QUEUED and failed.task_id
    faq.refresh_from_db()
    assert faq.status == DocumentStatus.READY
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert "1 document(s) queued again." in texts
    assert any("not approved" in t for t in texts)
    assert any("FAQ page" in t for t in texts)


def test_bulk_delete_costs_the_same_queries_for_three_or_thirty_documents(client, world):
    kb, users, docs = world
    client.force_login(users["owner"])

    def cost(chosen):
        with CaptureQueriesContext(connection) as queries:
            _bulk(client, kb, "delete", [d.pk for d in chosen])
        # One audit event per document deleted, by design: an insert in its own savepoint
        # (3 statements); the cascade over chunks and vectors is shared by all of them.
        return len(queries) - 3 * len(chosen)

    Chunk.objects.bulk_create(
        Chunk(document=doc, knowledge_base=kb, ordinal=k, text="x")
        for doc in docs[10:43]
        for k in range(4)
    )
    assert cost(docs[10:40]) <= cost(docs[40:43]) + 2


def test_empty_or_unknown_action_is_refused_with_a_message(client, world):
    kb, users, docs = world
    client.force_login(users["owner"])
    response = _bulk(client, kb, "delete", [])
    assert response.status_code == 302
    assert any("Select at least one" in str(m) for m in get_messages(response.wsgi_request))
    _bulk(client, kb, "explode", [docs[0].pk])
    assert Document.objects.filter(pk=docs[0].pk).exists()


def test_page_renders_checkboxes_and_bar_for_editors_only(client, world):
    kb, users, docs = world
    client.force_login(users[Role.EDITOR])
    html = _page(client, kb).content.decode()
    assert 'id="select-page"' in html and 'name="ids"' in html and 'id="bulk-bar"' in html
    client.force_login(users[Role.VIEWER])
    html = _page(client, kb).content.decode()
    assert 'name="ids"' not in html and 'id="bulk-bar"' not in html


# --- the API --------------------------------------------------------------------------------


def test_api_list_takes_the_same_parameters(client, world):
    kb, users, docs = world
    headers = _token(users["owner"])
    url = f"/api/v1/knowledge-bases/{kb.pk}/documents"
    body = client.get(url, {"q": "report", "sort": "name", "limit": 5}, **headers).json()
    assert body["count"] == N // 4
    assert [d["name"] for d in body["items"]] == sorted(
        (_name(i) for i in range(N) if i % 4 == 0), key=str.lower
    )[:5]
    second = client.get(url, {"q": "report", "sort": "name", "limit": 5, "offset": 5}, **headers)
    assert not {d["id"] for d in body["items"]} & {d["id"] for d in second.json()["items"]}
    pdf = client.get(url, {"type": "pdf", "status": "failed", "limit": 100}, **headers).json()
    assert pdf["count"] == sum(1 for i in range(N) if i % 3 == 0 and STATUSES[i % 5] == "failed")
    by_size = client.get(url, {"sort": "-size", "limit": 3}, **headers).json()["items"]
    assert [d["size"] for d in by_size] == sorted((d.size for d in docs), reverse=True)[:3]
    first = client.get(url, {"sort": "date", "limit": 1}, **headers).json()["items"][0]
    assert first["id"] == docs[0].pk and first["chunks"] == 3
    for bad in ({"status": "nope"}, {"sort": "owner"}, {"type": "../x"}):
        response = client.get(url, bad, **headers)
        assert response.status_code == 400, bad
        assert response.json()["error"]["code"] == "bad_request"


def test_api_list_hides_restricted_documents_from_the_count(client, world):
    kb, users, docs = world
    Document.objects.filter(pk=docs[0].pk).update(restricted=True)
    url = f"/api/v1/knowledge-bases/{kb.pk}/documents"
    viewer = client.get(url, {"limit": 100}, **_token(users[Role.VIEWER])).json()
    assert viewer["count"] == N - 1 and docs[0].pk not in {d["id"] for d in viewer["items"]}


def test_api_bulk_returns_a_result_per_id(client, world, make_user):
    kb, users, docs = world
    url = f"/api/v1/knowledge-bases/{kb.pk}/documents/bulk"
    Document.objects.filter(pk=docs[3].pk).update(review_status=ReviewStatus.PENDING)

    def post(user, payload):
        return client.post(
            url, json.dumps(payload), content_type="application/json", **_token(user)
        )

    response = post(users["owner"], {"action": "reingest", "ids": [docs[2].pk, docs[3].pk, 99999]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["done"] == 1 and body["failed"] == 2
    assert [(r["id"], r["ok"], r["error"]) for r in body["results"]] == [
        (docs[2].pk, True, ""),
        (docs[3].pk, False, "not_approved"),
        (99999, False, "not_found"),
    ]
    deleted = post(users[Role.EDITOR], {"action": "delete", "ids": [docs[0].pk, docs[1].pk]})
    assert deleted.json()["done"] == 2
    assert not Document.objects.filter(pk__in=[docs[0].pk, docs[1].pk]).exists()
    # Viewers, contributors and strangers: 404, as for a knowledge base they cannot change.
    for user in (users[Role.VIEWER], users[Role.CONTRIBUTOR], make_user("mallory")):
        assert post(user, {"action": "delete", "ids": [docs[5].pk]}).status_code == 404
    assert Document.objects.filter(pk=docs[5].pk).exists()
    assert post(users["owner"], {"action": "burn", "ids": [docs[5].pk]}).status_code == 422
    assert post(users["owner"], {"action": "delete", "ids": []}).status_code == 422


# --- the knowledge-base list ----------------------------------------------------------------


def test_knowledge_base_list_search_web_and_api(client, world, make_kb):
    kb, users, docs = world
    owner = users["owner"]
    make_kb(owner, "Payroll", description="salaries and taxes")
    make_kb(owner, "Travel")
    client.force_login(owner)
    response = client.get(reverse("kb_list"), {"q": "PAY"})
    assert [k.name for k in response.context["knowledge_bases"]] == ["Payroll"]
    response = client.get(reverse("kb_list"), {"q": "taxes"})
    assert [k.name for k in response.context["knowledge_bases"]] == ["Payroll"]
    assert b"No knowledge base matches." in client.get(reverse("kb_list"), {"q": "zzz"}).content
    names = client.get("/api/v1/knowledge-bases", {"q": "tra"}, **_token(owner)).json()
    assert [k["name"] for k in names] == ["Travel"]
    everything = client.get("/api/v1/knowledge-bases", **_token(owner)).json()
    assert len(everything) == KnowledgeBase.objects.count()


def test_knowledge_base_list_counts_only_what_the_user_may_see(client, world):
    kb, users, docs = world
    secret = docs[0]  # holds 3 of the 15 chunks
    Document.objects.filter(pk=secret.pk).update(restricted=True)
    Document.objects.filter(pk=docs[1].pk).update(
        review_status=ReviewStatus.PENDING, uploaded_by=users[Role.CONTRIBUTOR]
    )

    def listed(user):
        client.force_login(user)
        (row,) = client.get(reverse("kb_list")).context["knowledge_bases"]
        api = client.get("/api/v1/knowledge-bases", **_token(user)).json()
        return row, api[0]["documents"]

    row, api_count = listed(users[Role.VIEWER])
    assert (row.n_documents, row.n_chunks, api_count) == (N - 2, 15 - 6, N - 2)
    assert row.n_ready == sum(1 for i in range(2, N) if STATUSES[i % 5] == "ready")
    assert row.size == sum(d.size for d in docs[2:])
    row, api_count = listed(users["owner"])
    assert (row.n_documents, row.n_chunks, api_count) == (N, 15, N)
    # The contributor sees their own contribution, not the restricted document.
    row, _ = listed(users[Role.CONTRIBUTOR])
    assert (row.n_documents, row.n_chunks) == (N - 1, 12)
