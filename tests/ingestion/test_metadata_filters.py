"""Document metadata (tags, key-value pairs, automatic fields) and the filter language
applied inside recall SQL: validation, SQL semantics on real rows, recall that still gets k
candidates under a filter (English and Chinese, real models), and every way in (API upload /
PATCH / GET, search and chat API, /v1/chat/completions `metadata`, `manage.py ingest`)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from ingestion.documents import (
    InvalidMetadata,
    clean_meta,
    clean_tags,
    document_set_metadata,
    parse_meta_lines,
)
from ingestion.models import Document, DocumentStatus
from ingestion.scope import InvalidFilter, document_scope, parse_filters
from ragapp.models import ApiToken

TODAY = timezone.now().date().isoformat()  # uploaded_at is the UTC date

# --- the filter language -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, {}),
        ({}, {}),
        ({"tags": []}, {}),
        ({"tags": ["a", " b ", "a"]}, {"tags": ["a", "b"]}),
        ({"meta": {"dept": "hr"}}, {"meta": {"dept": {"eq": "hr"}}}),
        ({"meta": {"year": {"gte": 2020}}}, {"meta": {"year": {"gte": 2020}}}),
        (
            {"meta": {"year": {"gte": 2020, "lte": 2023.5}}},
            {"meta": {"year": {"gte": 2020, "lte": 2023.5}}},
        ),
        ({"meta": {"d": {"lte": "2024-02-29"}}}, {"meta": {"d": {"lte": "2024-02-29"}}}),
        ({"meta": {"dept": {"in": ["hr", 3]}}}, {"meta": {"dept": {"in": ["hr", 3]}}}),
        ({"meta": {"flag": True}}, {"meta": {"flag": {"eq": True}}}),
        ({"meta": {"pages": {"gte": 2}}}, {"meta": {"pages": {"gte": 2}}}),
        (
            {"meta": {"uploaded_at": {"gte": "2020-01-01"}}},
            {"meta": {"uploaded_at": {"gte": "2020-01-01"}}},
        ),
    ],
)
def test_valid_filters_are_normalised(raw, expected):
    assert parse_filters(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "must be an object"),
        ({"tag": ["a"]}, "unknown field"),
        ({"tags": "a"}, "list of strings"),
        ({"tags": [1]}, "list of strings"),
        ({"tags": [str(i) for i in range(21)]}, "at most 20"),
        ({"meta": []}, "an object expected"),
        ({"meta": {"bad key": "x"}}, "invalid key"),
        ({"meta": {"k" * 65: "x"}}, "invalid key"),
        ({"meta": {"year": {"gt": 1}}}, "operators are"),
        ({"meta": {"year": {}}}, "operators are"),
        ({"meta": {"year": {"gte": "soon"}}}, "a number or a date"),
        ({"meta": {"year": {"gte": "2024-13-01"}}}, "a number or a date"),
        ({"meta": {"year": {"gte": True}}}, "a number or a date"),
        ({"meta": {"year": {"in": "2020"}}}, "a list of 1 to"),
        ({"meta": {"year": {"in": []}}}, "a list of 1 to"),
        ({"meta": {"year": {"in": [[1]]}}}, "a string, a number or a date"),
        ({"meta": {"year": None}}, "a string, a number or a date"),
        ({"meta": {"year": float("nan")}}, "a string, a number or a date"),
        ({"meta": {"dept": "x" * 501}}, "at most 500"),
        ({"meta": {"pages": "many"}}, "a number expected"),
        ({"meta": {"type": {"gte": 1}}}, "a number or a date"),
        ({"meta": {"type": 3}}, "a string expected"),
        ({"meta": {"uploaded_at": "yesterday"}}, "a date"),
    ],
)
def test_invalid_filters_raise_a_user_facing_message(raw, message):
    with pytest.raises(InvalidFilter, match=message):
        parse_filters(raw)


def test_metadata_validation():
    assert clean_tags("a, b,,a") == ["a", "b"]
    assert clean_meta('{"year": 2020, "dept": " hr "}') == {"year": 2020, "dept": "hr"}
    assert parse_meta_lines("year=2020\nscore=1.5\nd=2024-01-31\nok=true\n\ndept = hr") == {
        "year": 2020,
        "score": 1.5,
        "d": "2024-01-31",
        "ok": True,
        "dept": "hr",
    }
    for bad in (
        {"type": "pdf"},  # an automatic field
        {"bad key": 1},
        {"k": [1]},
        {"k": float("inf")},
        {"k": "x" * 501},
        {f"k{i}": 1 for i in range(51)},
        "[1]",
        "{nope",
    ):
        with pytest.raises(InvalidMetadata):
            clean_meta(bad)
    with pytest.raises(InvalidMetadata):
        clean_tags([f"t{i}" for i in range(21)])
    with pytest.raises(InvalidMetadata):
        clean_tags(["x" * 101])
    with pytest.raises(InvalidMetadata):
        parse_meta_lines("no equals sign")


# --- SQL semantics on real rows ------------------------------------------------------------


@pytest.fixture
def rows(make_user, make_kb):
    owner = make_user("owner")
    kb = make_kb(owner)

    def doc(name, tags=(), meta=None, **extra):
        return Document.objects.create(
            knowledge_base=kb,
            original_name=name,
            content_hash=name,
            tags=list(tags),
            meta=meta or {},
            uploaded_by=owner,
            **extra,
        )

    return {
        "a": doc("a.pdf", ["hr", "policy"], {"year": 2019, "dept": "hr"}, page_count=3, size=100),
        "b": doc("b.docx", ["hr"], {"year": 2021, "dept": "it", "date": "2021-06-01"}, size=5000),
        "c": doc("c.PDF", ["finance"], {"year": "2022", "date": "2023-01-15"}, page_count=10),
        "d": doc("d.txt", [], {"year": 2023.5, "dept": "hr", "ok": True}, language="zh"),
    }


def matching(filters) -> set[str]:
    scope = document_scope(filters=filters)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT d.original_name FROM ingestion_document d WHERE {scope.sql}", scope.params
        )
        return {name.split(".")[0] for (name,) in cursor.fetchall()}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (None, {"a", "b", "c", "d"}),
        ({"tags": ["hr"]}, {"a", "b"}),
        ({"tags": ["policy", "finance"]}, {"a", "c"}),  # any of
        ({"tags": ["nope"]}, set()),
        ({"meta": {"dept": "hr"}}, {"a", "d"}),
        ({"meta": {"dept": "hr", "year": {"gte": 2020}}}, {"d"}),  # all of
        ({"tags": ["hr"], "meta": {"dept": "hr"}}, {"a"}),
        ({"meta": {"year": 2019}}, {"a"}),
        ({"meta": {"year": 2019.0}}, {"a"}),  # numbers compare as numbers
        ({"meta": {"year": "2022"}}, {"c"}),
        ({"meta": {"year": {"gte": 2020}}}, {"b", "d"}),  # the string "2022" is not a number
        ({"meta": {"year": {"gte": 2020, "lte": 2022}}}, {"b"}),
        ({"meta": {"year": {"in": [2019, 2023.5]}}}, {"a", "d"}),
        ({"meta": {"dept": {"in": ["it", "finance"]}}}, {"b"}),
        ({"meta": {"date": {"gte": "2022-01-01"}}}, {"c"}),
        ({"meta": {"date": {"lte": "2022-01-01"}}}, {"b"}),
        ({"meta": {"dept": {"gte": 5}}}, set()),  # text stored: no match, no error
        ({"meta": {"year": {"lte": "2030-01-01"}}}, set()),  # numbers are not dates
        ({"meta": {"ok": True}}, {"d"}),
        # automatic fields
        ({"meta": {"type": "pdf"}}, {"a", "c"}),
        ({"meta": {"type": {"in": ["docx", "txt"]}}}, {"b", "d"}),
        ({"meta": {"pages": {"gte": 5}}}, {"c"}),
        ({"meta": {"pages": {"in": [3, 10.0]}}}, {"a", "c"}),
        ({"meta": {"size": {"lte": 1000}}}, {"a", "c", "d"}),
        ({"meta": {"language": "zh"}}, {"d"}),
        ({"meta": {"uploaded_by": "owner"}}, {"a", "b", "c", "d"}),
        ({"meta": {"uploaded_by": "someone"}}, set()),
        ({"meta": {"uploaded_at": {"gte": TODAY}}}, {"a", "b", "c", "d"}),
        ({"meta": {"uploaded_at": {"lte": "2000-01-01"}}}, set()),
        ({"meta": {"uploaded_at": {"in": ["2000-01-01", TODAY]}}}, {"a", "b", "c", "d"}),
        ({"meta": {"uploaded_at": TODAY}}, {"a", "b", "c", "d"}),
        ({"meta": {"source_url": ""}}, {"a", "b", "c", "d"}),
    ],
)
def test_filter_sql_semantics(rows, filters, expected):
    assert matching(filters) == expected


def test_document_set_metadata_validates_and_saves(rows):
    doc = document_set_metadata(document=rows["d"], tags=["x", "y"], meta={"year": 1999})
    doc.refresh_from_db()
    assert (doc.tags, doc.meta) == (["x", "y"], {"year": 1999})
    document_set_metadata(document=doc, tags=["z"])  # meta None: unchanged
    doc.refresh_from_db()
    assert (doc.tags, doc.meta) == (["z"], {"year": 1999})
    with pytest.raises(InvalidMetadata):
        document_set_metadata(document=doc, meta={"size": 1})


# --- the API: upload, PATCH, GET -----------------------------------------------------------


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def auth(alice):
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(alice, 'test')[1]}"}


def upload(client, auth, kb, name="a.txt", **form):
    files = [SimpleUploadedFile(name, b"some text about metadata", content_type="text/plain")]
    return client.post(
        f"/api/v1/knowledge-bases/{kb.pk}/documents", {"files": files, **form}, **auth
    )


def test_api_upload_patch_and_get_metadata(client, auth, alice, make_kb):
    kb = make_kb(alice)
    response = upload(client, auth, kb, tags="hr, policy", meta='{"year": 2021, "d": "2021-06-01"}')
    assert response.status_code == 201, response.content
    doc = response.json()["accepted"][0]
    assert doc["tags"] == ["hr", "policy"] and doc["meta"] == {"year": 2021, "d": "2021-06-01"}
    got = client.get(f"/api/v1/documents/{doc['id']}", **auth).json()
    assert got["tags"] == ["hr", "policy"] and got["meta"]["year"] == 2021
    assert got["fields"] == {
        "type": "txt",
        "language": "",
        "uploaded_by": "alice",
        "uploaded_at": TODAY,
        "pages": None,
        "size": 24,
        "source_url": "",
    }
    patched = client.patch(
        f"/api/v1/documents/{doc['id']}",
        {"tags": ["finance"]},
        content_type="application/json",
        **auth,
    )
    assert patched.status_code == 200
    assert patched.json()["tags"] == ["finance"] and patched.json()["meta"]["year"] == 2021
    patched = client.patch(
        f"/api/v1/documents/{doc['id']}",
        {"meta": {"year": 2022}},
        content_type="application/json",
        **auth,
    )
    assert patched.json()["meta"] == {"year": 2022}
    bad = client.patch(
        f"/api/v1/documents/{doc['id']}",
        {"meta": {"size": 3}},
        content_type="application/json",
        **auth,
    )
    assert bad.status_code == 422 and "automatic field" in bad.json()["error"]["message"]
    assert Document.objects.get(pk=doc["id"]).meta == {"year": 2022}


@pytest.mark.parametrize(
    "form",
    [
        {"meta": "{not json"},
        {"meta": '{"bad key": 1}'},
        {"tags": ",".join(f"t{i}" for i in range(21))},
    ],
)
def test_api_upload_refuses_invalid_metadata(client, auth, alice, make_kb, form):
    kb = make_kb(alice)
    response = upload(client, auth, kb, **form)
    assert response.status_code == 422
    assert not kb.documents.exists()


def test_api_search_and_chat_refuse_invalid_filters(client, auth, alice, make_kb):
    kb = make_kb(alice)
    for path, body in (
        ("/api/v1/search", {"knowledge_bases": [kb.pk], "query": "q"}),
        ("/api/v1/chat", {"knowledge_bases": [kb.pk], "question": "q"}),
    ):
        response = client.post(
            path,
            {**body, "filters": {"meta": {"year": {"gt": 1}}}},
            content_type="application/json",
            **auth,
        )
        assert response.status_code == 422, path
        assert "operators are" in response.json()["error"]["message"]
    response = client.post(
        "/v1/chat/completions",
        {
            "model": f"kb-{kb.pk}",
            "messages": [{"role": "user", "content": "q"}],
            "metadata": {"tags": "x"},
        },
        content_type="application/json",
        **auth,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_metadata"


def test_ingest_command_sets_tags_and_meta(tmp_path, alice, monkeypatch):
    from ingestion.management.commands import ingest

    monkeypatch.setattr(ingest, "require_worker", lambda: None)  # queued, not processed
    (tmp_path / "a.txt").write_text("text one")
    (tmp_path / "b.txt").write_text("text two")
    call_command(
        "ingest",
        str(tmp_path),
        "--kb=tagged",
        "--owner=alice",
        "--no-wait",
        "--tag=hr",
        "--tag=policy",
        "--meta=year=2020",
        "--meta=score=0.5",
        "--meta=valid_from=2020-01-31",
        "--meta=dept=human resources",
        stdout=io.StringIO(),
    )
    docs = Document.objects.filter(knowledge_base__name="tagged")
    assert docs.count() == 2
    for doc in docs:
        assert doc.tags == ["hr", "policy"]
        assert doc.meta == {
            "year": 2020,
            "score": 0.5,
            "valid_from": "2020-01-31",
            "dept": "human resources",
        }
    with pytest.raises(CommandError, match="not key=value"):
        call_command("ingest", str(tmp_path), "--kb=x", "--owner=alice", "--meta=oops")


# --- the web pages: upload form, document page, chat, hit testing --------------------------


def test_web_upload_sets_tags_and_meta_and_refuses_bad_ones(client, alice, make_kb):
    kb = make_kb(alice)
    client.force_login(alice)
    from django.urls import reverse

    url = reverse("kb_upload", args=[kb.pk])
    files = [SimpleUploadedFile("a.txt", b"web upload text", content_type="text/plain")]
    response = client.post(
        url,
        {"files": files, "tags": "hr, policy", "meta": "year=2020\nd=2020-01-31"},
        HTTP_X_REQUESTED_WITH="XMLHttpRequest",
    )
    assert response.status_code == 200 and len(response.json()["accepted"]) == 1
    doc = kb.documents.get()
    assert doc.tags == ["hr", "policy"] and doc.meta == {"year": 2020, "d": "2020-01-31"}
    files = [SimpleUploadedFile("b.txt", b"other text", content_type="text/plain")]
    response = client.post(
        url, {"files": files, "meta": "oops"}, HTTP_X_REQUESTED_WITH="XMLHttpRequest"
    )
    assert (
        response.json()["accepted"] == [] and "key=value" in response.json()["refused"][0]["error"]
    )
    assert kb.documents.count() == 1
    page = client.get(reverse("kb_detail", args=[kb.pk])).content.decode()
    assert 'name="tags"' in page and 'name="meta"' in page


def test_document_page_edits_metadata_for_editors_only(client, alice, make_user, make_kb):
    from django.urls import reverse

    from ingestion.models import Membership, Role

    kb = make_kb(alice)
    doc = Document.objects.create(knowledge_base=kb, original_name="a.txt", content_hash="a")
    viewer = make_user("viewer")
    Membership.objects.create(knowledge_base=kb, user=viewer, role=Role.VIEWER)
    url = reverse("document_metadata", args=[doc.pk])
    client.force_login(viewer)
    assert (
        'action="' + url not in client.get(reverse("document_view", args=[doc.pk])).content.decode()
    )
    assert client.post(url, {"tags": "x"}).status_code in (403, 404)
    client.force_login(alice)
    assert 'action="' + url in client.get(reverse("document_view", args=[doc.pk])).content.decode()
    client.post(url, {"tags": "a, b", "meta": "year=2021\nok=true"})
    doc.refresh_from_db()
    assert doc.tags == ["a", "b"] and doc.meta == {"year": 2021, "ok": True}
    client.post(url, {"tags": "a", "meta": "size=1"})  # refused: an automatic field
    doc.refresh_from_db()
    assert doc.tags == ["a", "b"]
    page = client.get(reverse("document_view", args=[doc.pk])).content.decode()
    assert "year=2021" in page


def test_chat_offers_the_tags_and_refuses_invalid_filters(client, alice, make_kb):
    from django.urls import reverse

    kb = make_kb(alice)
    Document.objects.create(
        knowledge_base=kb, original_name="a.txt", content_hash="a", tags=["hr", "policy"]
    )
    client.force_login(alice)
    page = client.get(reverse("chat")).content.decode()
    assert 'class="filter-tag" value="hr"' in page and f'data-kbs="{kb.pk}"' in page
    response = client.post(
        reverse("chat_ask"),
        {"question": "q", "kb": [kb.pk], "filters": json.dumps({"tags": "hr"})},
    )
    assert response.status_code == 400 and b"list of strings" in response.content
    response = client.post(reverse("chat_ask"), {"question": "q", "kb": [kb.pk], "filters": "{"})
    assert response.status_code == 400


def test_hit_testing_shows_an_invalid_filter_without_searching(client, alice, make_kb):
    from django.urls import reverse

    kb = make_kb(alice)
    client.force_login(alice)
    page = client.get(
        reverse("hit_test", args=[kb.pk]), {"q": "x", "filters": '{"meta": {"y": {"gt": 1}}}'}
    ).content.decode()
    assert "operators are" in page


# --- recall-level filtering with the real models, both languages ---------------------------

EN_BETTER = {
    f"backup{i}.txt": f"Backup guide {i}: pg_dump writes a consistent backup of the database; "
    f"restore the backup with pg_restore. Backup schedule number {i}."
    for i in range(8)
}
EN_MATCHING = {
    "m1.txt": "Office plants need water on Mondays. The database has a pg_dump note.",
    "m2.txt": "The cafeteria menu changes weekly. A pg_dump of the menu database exists.",
    "m3.txt": "Parking permits renew in January. Ask about pg_dump at the database desk.",
}
ZH_BETTER = {
    f"备份{i}.txt": f"备份指南{i}：使用 pg_dump 对数据库做一致性备份，"
    f"用 pg_restore 恢复备份。备份计划{i}。"
    for i in range(8)
}
ZH_MATCHING = {
    "匹配1.txt": "办公室的植物每周一浇水。这里提到了一次数据库和 pg_dump。",
    "匹配2.txt": "食堂的菜单每周更换。菜谱数据库用 pg_dump 导出。",
    "匹配3.txt": "停车证在一月份续期。停车场的数据库有 pg_dump。",
}


@pytest.fixture
def two_language_kbs(make_user, make_kb):
    from tests.conftest import ingest_texts

    owner = make_user("owner")
    kbs = {}
    for lang, better, matching_docs, query in (
        ("en", EN_BETTER, EN_MATCHING, "how do I back up the database with pg_dump"),
        ("zh", ZH_BETTER, ZH_MATCHING, "如何用 pg_dump 备份数据库"),
    ):
        kb = ingest_texts(make_kb(owner, f"kb-{lang}"), {**better, **matching_docs})
        assert set(kb.documents.values_list("status", flat=True)) == {DocumentStatus.READY}
        for doc in kb.documents.filter(original_name__in=list(matching_docs)):
            document_set_metadata(
                document=doc, tags=["keep"], meta={"year": 2024, "since": "2024-03-01"}
            )
        for doc in kb.documents.exclude(original_name__in=list(matching_docs)):
            document_set_metadata(document=doc, meta={"year": 2019, "since": "2019-03-01"})
        kbs[lang] = (kb, query, set(matching_docs))
    return kbs


FILTERS = [
    {"tags": ["keep"]},
    {"meta": {"year": {"gte": 2020}}},
    {"meta": {"since": {"gte": "2024-01-01", "lte": "2024-12-31"}}},
    {"meta": {"year": {"in": [2024, 2030]}}, "tags": ["keep", "other"]},
]


@pytest.mark.models
def test_a_filtered_recall_still_gets_k_candidates_in_both_languages(two_language_kbs):
    from retrieval.services import recall

    for lang, (kb, query, matching_docs) in two_language_kbs.items():
        unfiltered = recall(knowledge_bases=[kb], query=query, k=2)
        assert not {c.document_name for c in unfiltered} & matching_docs, lang
        for filters in FILTERS:
            for dense, keyword in ((True, True), (True, False), (False, True)):
                got = recall(
                    knowledge_bases=[kb],
                    query=query,
                    k=2,
                    dense=dense,
                    keyword=keyword,
                    filters=filters,
                )
                names = {c.document_name for c in got}
                assert len(got) == 2 and names <= matching_docs, (lang, filters, dense, names)


@pytest.mark.models
def test_filters_in_the_search_chat_and_openai_apis(client, two_language_kbs, settings):
    settings.OPENAI_BASE_URL = ""
    kb, query, matching_docs = two_language_kbs["en"]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(kb.owner, 't')[1]}"}
    filters = {"tags": ["keep"], "meta": {"year": 2024}}
    found = client.post(
        "/api/v1/search",
        {"knowledge_bases": [kb.pk], "query": query, "filters": filters, "recall_k": 2},
        content_type="application/json",
        **auth,
    ).json()
    assert found["results"] and {r["document"] for r in found["results"]} <= matching_docs
    assert found["recalled"] == 2
    answer = client.post(
        "/api/v1/chat",
        {"knowledge_bases": [kb.pk], "question": query, "filters": filters},
        content_type="application/json",
        **auth,
    ).json()
    assert {s["document"] for s in answer["sources"]} <= matching_docs
    completion = client.post(
        "/v1/chat/completions",
        {
            "model": f"kb-{kb.pk}",
            "messages": [{"role": "user", "content": query}],
            "metadata": filters,
        },
        content_type="application/json",
        **auth,
    )
    assert completion.status_code == 200, completion.content
    assert {s["document"] for s in completion.json()["sources"]} <= matching_docs
    nothing = client.post(
        "/api/v1/search",
        {"knowledge_bases": [kb.pk], "query": query, "filters": {"tags": ["absent"]}},
        content_type="application/json",
        **auth,
    ).json()
    assert nothing["results"] == [] and nothing["recalled"] == 0
    client.force_login(kb.owner)
    page = client.get(
        f"/kb/{kb.pk}/hit-test/", {"q": query, "filters": json.dumps(filters)}
    ).content.decode()
    assert "m1.txt" in page or "m2.txt" in page or "m3.txt" in page
    assert "backup0.txt" not in page


def test_bench_search_times_recall_with_and_without_a_tag_filter(transactional_db, tmp_path):
    # transactional_db: CREATE INDEX refuses to run while a test transaction's deferred
    # foreign-key checks are pending.
    out = tmp_path / "bench.json"
    call_command(
        "bench_search",
        sizes=[300],
        queries=5,
        skip_rerank=True,
        filter_share=0.1,
        json_out=str(out),
        stdout=io.StringIO(),
    )
    rows = json.loads(out.read_text())["recall"][0]["filtered"]
    assert {(r["mode"], r["filter"]) for r in rows} == {
        (mode, label)
        for mode in ("dense", "keyword", "hybrid")
        for label in ("none", "tag bench-filter")
    }
    # 3 documents of 100 chunks, one tagged: a filtered dense query still gets its 50.
    dense = next(r for r in rows if r["mode"] == "dense" and r["filter"] != "none")
    assert dense["k_mean"] == 50 and dense["p50_ms"] > 0
    assert not Document.objects.filter(original_name__startswith="synthetic").exists()
