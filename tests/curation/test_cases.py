"""Saved test cases and the regression suite (curation.cases): saving from hit testing, the
metrics of a run, cases that survive re-ingestion, cases that got worse after a chunk edit,
the debounced hooks, and owner-only access. Real database; the Celery task is called
directly (nothing is sent to the broker)."""

from __future__ import annotations

import math

import pytest

from curation.cases import regression_run
from curation.models import RegressionRun, SavedCase
from curation.tasks import enqueue_regression, run_regression
from ingestion.models import Chunk, Membership, Role
from ragapp.models import ApiToken
from retrieval.services import search
from tests.conftest import ingest_texts

pytestmark = pytest.mark.django_db

DOCS = {
    "backup.md": "# Backup\n\npg_dump writes a consistent backup of one PostgreSQL database as "
    "an SQL script. To restore it, feed the script to psql.",
    "vacuum.md": "# Vacuum\n\nVACUUM reclaims storage occupied by dead tuples. Run it "
    "regularly, or let autovacuum do it.",
    "indexes.md": "# Indexes\n\nA B-tree index keeps keys sorted. An index is rebuilt from "
    "the table, so it needs no backup of its own.",
    "wal.md": "# Write-ahead log\n\nThe WAL records every change before it reaches the data "
    "files; archive it for point-in-time recovery of a backup.",
}
QUERY = "How do I back up a PostgreSQL database with pg_dump?"


@pytest.fixture
def kb(make_user, make_kb):
    return ingest_texts(make_kb(make_user("owner"), "manuals"), DOCS)


def _answer_order(kb, query=QUERY):
    return search(knowledge_bases=[kb], query=query).results


def _case(kb, ranks=(0,), query=QUERY):
    from curation.cases import case_save

    results = _answer_order(kb, query)
    return case_save(
        knowledge_base=kb,
        query=query,
        chunk_ids=[results[i].chunk_id for i in ranks],
        user=kb.owner,
    )


def test_owner_saves_a_case_from_hit_testing(client, kb):
    client.force_login(kb.owner)
    page = client.get(f"/kb/{kb.pk}/hit-test/", {"q": QUERY}).content.decode()
    assert 'id="case-form"' in page and 'name="chunk"' in page and 'form="case-form"' in page
    assert "js/hit_test.js" in page
    first = _answer_order(kb)[0]
    response = client.post(
        f"/kb/{kb.pk}/cases/save", {"q": QUERY, "chunk": [str(first.chunk_id), "x"]}
    )
    assert response.status_code == 302 and f"/kb/{kb.pk}/hit-test/?q=" in response["Location"]
    case = SavedCase.objects.get(knowledge_base=kb)
    chunk = Chunk.objects.get(pk=first.chunk_id)
    assert case.query == QUERY and case.created_by == kb.owner
    assert case.relevant == [
        {"chunk_id": chunk.pk, "document_id": chunk.document_id, "text": chunk.text, "page": None}
    ]


def test_a_case_needs_a_passage_of_this_knowledge_base(client, kb, make_user, make_kb):
    other = ingest_texts(make_kb(make_user("other"), "other"), {"a.md": "# A\n\nAlpha beta."})
    foreign = Chunk.objects.filter(knowledge_base=other).first()
    client.force_login(kb.owner)
    response = client.post(
        f"/kb/{kb.pk}/cases/save", {"q": QUERY, "chunk": [foreign.pk]}, follow=True
    )
    assert "Mark at least one passage" in response.content.decode()
    assert not SavedCase.objects.exists()


def test_only_owners_see_and_save_cases(client, kb, make_user):
    member, stranger = make_user("member"), make_user("stranger")
    Membership.objects.create(knowledge_base=kb, user=member, role=Role.EDITOR)
    chunk = Chunk.objects.filter(knowledge_base=kb, is_parent=False).first()
    client.force_login(member)
    page = client.get(f"/kb/{kb.pk}/hit-test/", {"q": QUERY}).content.decode()
    assert 'id="case-form"' not in page
    assert client.get(f"/kb/{kb.pk}/cases/").status_code == 403
    assert client.post(f"/kb/{kb.pk}/cases/save", {"q": "x", "chunk": chunk.pk}).status_code == 403
    client.force_login(stranger)
    assert client.get(f"/kb/{kb.pk}/cases/").status_code == 404
    assert client.post(f"/kb/{kb.pk}/cases/save", {"q": "x", "chunk": chunk.pk}).status_code == 404
    assert not SavedCase.objects.exists()
    client.force_login(kb.owner)
    assert client.get(f"/kb/{kb.pk}/cases/").status_code == 200


def test_ndcg_is_one_when_the_marked_passage_comes_first(kb):
    first = _case(kb, ranks=(0,))
    second = _case(kb, ranks=(1,), query=QUERY)
    run = regression_run(knowledge_base=kb, trigger=RegressionRun.Trigger.MANUAL)
    assert run.status == RegressionRun.Status.DONE and run.finished_at is not None
    rows = {r["key"]: r for r in run.results}
    assert rows[f"case:{first.pk}"]["ndcg@10"] == 1.0
    assert rows[f"case:{first.pk}"]["recall@10"] == 1.0
    assert rows[f"case:{first.pk}"]["ranking"][0]["relevant"] is True
    # The marked passage second: DCG 1/log2(3), ideal 1.
    assert rows[f"case:{second.pk}"]["ndcg@10"] == round(1 / math.log2(3), 4)
    assert rows[f"case:{second.pk}"]["recall@10"] == 1.0
    assert run.metrics["ndcg@10"] == round((1 + 1 / math.log2(3)) / 2, 4)
    assert run.metrics["cases"] == 2 and run.metrics["qa_pairs"] == 0
    assert run.metrics["worse"] == []


def test_qa_pairs_are_part_of_the_suite(kb):
    from ingestion.models import QAPair

    document = kb.documents.get(original_name="backup.md")
    QAPair.objects.create(
        knowledge_base=kb, question=QUERY, document=document, document_name="backup.md"
    )
    QAPair.objects.create(knowledge_base=kb, question="orphan", document_name="gone.pdf")
    ranked_docs = list(dict.fromkeys(c.document_id for c in _answer_order(kb)))
    expected = 1 / math.log2(ranked_docs.index(document.pk) + 2)
    run = regression_run(knowledge_base=kb, trigger=RegressionRun.Trigger.MANUAL)
    assert run.metrics["qa_pairs"] == 1 and run.metrics["cases"] == 0
    (row,) = run.results
    assert row["kind"] == "qa" and row["ndcg@10"] == round(expected, 4)
    assert row["recall@10"] == 1.0


def test_a_case_survives_reingestion(kb, django_capture_on_commit_callbacks):
    from ingestion.services import document_enqueue
    from ingestion.tasks import ingest_document

    case = _case(kb, ranks=(0,))
    marked = case.relevant[0]
    before = regression_run(knowledge_base=kb, trigger=RegressionRun.Trigger.MANUAL)
    document = kb.documents.get(pk=marked["document_id"])
    with django_capture_on_commit_callbacks(execute=False):
        document_enqueue(document=document, force=True)
    document.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert ingest_document.apply((document.pk,), task_id=document.task_id).get() == "ready"
    assert not Chunk.objects.filter(pk=marked["chunk_id"]).exists()  # new chunk ids
    # The ingestion hook queued one run (its task goes out after the commit, with the
    # document's second-stage vectors where an embedder applies).
    from ingestion.services import rerank_embedders_for

    queued = RegressionRun.objects.get(status=RegressionRun.Status.QUEUED)
    expected = 1 + bool(rerank_embedders_for(kb))
    assert queued.trigger == RegressionRun.Trigger.INGESTION and len(sent) == expected
    assert run_regression(queued.pk) == RegressionRun.Status.DONE
    queued.refresh_from_db()
    row = queued.results[0]
    assert row["ndcg@10"] == before.results[0]["ndcg@10"] == 1.0
    assert queued.metrics["worse"] == [] and queued.metrics["previous"] == before.pk


def test_near_same_text_in_the_same_document_still_matches():
    from curation.cases import same_passage

    entry = {"chunk_id": 1, "document_id": 7, "text": "VACUUM reclaims storage of dead tuples."}
    assert same_passage(entry, 99, 7, "VACUUM  reclaims storage of dead\ntuples.")
    assert same_passage(entry, 99, 7, "VACUUM reclaims the storage of dead tuples.")
    assert not same_passage(entry, 99, 8, entry["text"])  # another document
    assert not same_passage(entry, 99, 7, "A B-tree index keeps keys sorted.")
    assert same_passage(entry, 1, 8, "anything")  # the same chunk


def test_a_chunk_edit_that_breaks_a_case_lists_it_as_worse(client, kb):
    from ingestion.chunk_editing import chunk_update

    case = _case(kb, ranks=(0,))
    regression_run(knowledge_base=kb, trigger=RegressionRun.Trigger.MANUAL)
    chunk = Chunk.objects.get(pk=case.relevant[0]["chunk_id"])
    chunk_update(chunk=chunk, text="Lorem ipsum dolor sit amet, consectetur adipiscing elit.")
    queued = RegressionRun.objects.get(status=RegressionRun.Status.QUEUED)
    assert queued.trigger == RegressionRun.Trigger.CHUNK_EDIT
    run_regression(queued.pk)
    queued.refresh_from_db()
    (worse,) = queued.metrics["worse"]
    assert worse["key"] == f"case:{case.pk}" and worse["query"] == QUERY
    assert worse["before"]["ndcg@10"] == 1.0 and worse["after"]["ndcg@10"] < 1.0
    assert worse["before"]["ranking"][0]["relevant"] is True
    assert worse["after"]["ranking"][0]["relevant"] is False
    client.force_login(kb.owner)
    page = client.get(f"/kb/{kb.pk}/cases/").content.decode()
    assert 'id="worse-cases"' in page and QUERY in page and "<polyline" in page
    assert 'id="no-worse"' not in page


def test_hooks_queue_one_run_per_knowledge_base(kb, django_capture_on_commit_callbacks):
    settings_trigger = RegressionRun.Trigger.SETTINGS
    # An empty suite runs nothing.
    assert enqueue_regression(knowledge_base=kb, trigger=settings_trigger) is None
    _case(kb)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        first = enqueue_regression(knowledge_base=kb, trigger=RegressionRun.Trigger.INGESTION)
        for _ in range(99):  # the rest of a batch of 100 uploads
            assert enqueue_regression(knowledge_base=kb, trigger="ingestion") is None
    assert first is not None and len(sent) == 1
    assert RegressionRun.objects.filter(knowledge_base=kb).count() == 1
    # Once it runs, the next change queues again.
    run_regression(first.pk)
    # A rename does not move the ranking; a cut-off does.
    assert enqueue_regression(knowledge_base=kb, trigger=settings_trigger, changed=["name"]) is None
    assert enqueue_regression(
        knowledge_base=kb, trigger=settings_trigger, changed={"rerank_top_k": [8, 3]}
    )


def test_a_lost_queued_run_does_not_block_the_suite(kb, settings):
    _case(kb)
    lost = RegressionRun.objects.create(knowledge_base=kb, trigger="ingestion")
    assert enqueue_regression(knowledge_base=kb, trigger="ingestion") is None
    settings.RAG_REGRESSION_STALE_SECONDS = 0
    fresh = enqueue_regression(knowledge_base=kb, trigger="ingestion")
    lost.refresh_from_db()
    assert fresh is not None and lost.status == RegressionRun.Status.FAILED


def test_settings_changes_and_reranker_adaptation_queue_a_run(client, kb):
    from retrieval.models import RerankerModel
    from retrieval.training.service import reranker_activate

    _case(kb)
    client.force_login(kb.owner)
    client.post(f"/kb/{kb.pk}/thresholds", {"rerank_top_k": 5})
    kb.refresh_from_db()
    assert kb.rerank_top_k == 5
    run = RegressionRun.objects.get(status=RegressionRun.Status.QUEUED)
    assert run.trigger == RegressionRun.Trigger.SETTINGS
    run_regression(run.pk)

    _, raw = ApiToken.issue(kb.owner)
    response = client.patch(
        f"/api/v1/knowledge-bases/{kb.pk}",
        {"rerank_top_k": 6},
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 200
    run = RegressionRun.objects.get(status=RegressionRun.Status.QUEUED)
    assert run.trigger == RegressionRun.Trigger.SETTINGS
    run_regression(run.pk)

    reranker_activate(model=RerankerModel.objects.create(knowledge_base=kb))
    run = RegressionRun.objects.get(status=RegressionRun.Status.QUEUED)
    assert run.trigger == RegressionRun.Trigger.RERANKER


def test_run_now_and_delete_on_the_cases_page(client, kb, django_capture_on_commit_callbacks):
    case = _case(kb)
    client.force_login(kb.owner)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        client.post(f"/kb/{kb.pk}/cases/run")
        client.post(f"/kb/{kb.pk}/cases/run")
    assert len(sent) == 1
    run = RegressionRun.objects.get()
    assert run.trigger == RegressionRun.Trigger.MANUAL
    run_regression(run.pk)
    page = client.get(f"/kb/{kb.pk}/cases/").content.decode()
    assert 'id="latest-metrics"' in page and 'id="no-worse"' in page and QUERY in page
    client.post(f"/kb/{kb.pk}/cases/{case.pk}/delete")
    assert not SavedCase.objects.exists()


def _api(client, method, url, user, data=None):
    _, raw = ApiToken.issue(user)
    return getattr(client, method)(
        url,
        data,
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw}"},
    )


def test_api_test_cases_and_runs(client, kb, make_user, django_capture_on_commit_callbacks):
    member, stranger = make_user("member"), make_user("stranger")
    Membership.objects.create(knowledge_base=kb, user=member, role=Role.VIEWER)
    first = _answer_order(kb)[0]
    url = f"/api/v1/knowledge-bases/{kb.pk}/test-cases"
    body = {"query": QUERY, "chunk_ids": [first.chunk_id]}
    assert _api(client, "post", url, member, body).status_code == 403
    assert _api(client, "post", url, stranger, body).status_code == 404
    created = _api(client, "post", url, kb.owner, body)
    assert (
        created.status_code == 201 and created.json()["relevant"][0]["chunk_id"] == first.chunk_id
    )
    bad = _api(client, "post", url, kb.owner, {"query": QUERY, "chunk_ids": [0]})
    assert bad.status_code == 400
    listed = _api(client, "get", url, kb.owner).json()
    assert [c["query"] for c in listed] == [QUERY]

    runs = f"/api/v1/knowledge-bases/{kb.pk}/regression-runs"
    assert _api(client, "post", runs, member).status_code == 403
    with django_capture_on_commit_callbacks(execute=False):
        started = _api(client, "post", runs, kb.owner)
        again = _api(client, "post", runs, kb.owner)
    assert started.status_code == 202 and started.json()["status"] == "queued"
    assert again.json()["id"] == started.json()["id"]
    run_regression(started.json()["id"])
    assert _api(client, "get", runs, kb.owner).json()[0]["metrics"]["ndcg@10"] == 1.0
    detail = _api(client, "get", f"/api/v1/regression-runs/{started.json()['id']}", kb.owner)
    assert detail.json()["results"][0]["ndcg@10"] == 1.0
    assert (
        _api(client, "get", f"/api/v1/regression-runs/{started.json()['id']}", stranger).status_code
        == 404
    )

    case_url = f"/api/v1/test-cases/{created.json()['id']}"
    assert _api(client, "delete", case_url, stranger).status_code == 404
    assert _api(client, "delete", case_url, member).status_code == 403
    assert _api(client, "delete", case_url, kb.owner).status_code == 204
    assert not SavedCase.objects.exists()


def test_old_runs_are_pruned(kb, monkeypatch):
    import curation.cases

    monkeypatch.setattr(curation.cases, "RUNS_KEPT", 2)
    _case(kb)
    runs = [regression_run(knowledge_base=kb, trigger="manual") for _ in range(3)]
    kept = set(RegressionRun.objects.values_list("pk", flat=True))
    assert kept == {runs[1].pk, runs[2].pk}
    assert runs[2].metrics["previous"] == runs[1].pk
