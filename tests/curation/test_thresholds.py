"""Thresholds proposed from the owner's cases (curation.thresholds): the rerank cut-off's
precision/recall sweep on a constructed run, the abstention threshold from the calibration
rule, and applying them only when the owner confirms (page and API, audited)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from curation.models import RegressionRun
from curation.thresholds import cutoff_point, propose_abstain, propose_min_score
from ingestion.models import Membership, Role
from ragapp.models import ApiToken, AuditEvent

# Two queries, one relevant passage each: A's is first (0.9), B's is second (0.7) behind an
# irrelevant 0.8.
ROWS = [
    {"scored": [[0.9, "e0"], [0.5, None], [0.2, None]], "units": 1, "answer_p": None},
    {"scored": [[0.8, None], [0.7, "e0"], [0.1, None]], "units": 1, "answer_p": None},
]


def test_cutoff_point_keeps_the_head_like_apply_cutoffs():
    everything = cutoff_point(ROWS, None, 8)
    assert everything.precision == round(2 / 6, 4) and everything.recall == 1.0
    at_07 = cutoff_point(ROWS, 0.7, 8)
    assert at_07.precision == round(2 / 3, 4) and at_07.recall == 1.0
    # At 0.8 B stops before its relevant passage.
    assert cutoff_point(ROWS, 0.8, 8).recall == 0.5
    # top k 1 keeps only the first of each.
    assert cutoff_point(ROWS, None, 1).recall == 0.5
    assert cutoff_point(ROWS, 0.95, 8).precision is None  # nothing kept


def test_the_proposal_is_the_highest_cutoff_that_keeps_the_recall():
    points, proposal, base = propose_min_score(ROWS, top_k=8, keep_recall=0.95)
    # The highest cut-off that keeps the recall is 0.7; the proposal is half-way down to the
    # next score (0.5), which keeps the same passages.
    assert base == 1.0 and proposal == 0.6
    at_proposal, at_07 = cutoff_point(ROWS, proposal, 8), cutoff_point(ROWS, 0.7, 8)
    assert (at_proposal.precision, at_proposal.recall) == (at_07.precision, at_07.recall)
    assert [p.threshold for p in points] == [0.1, 0.2, 0.5, 0.7, 0.8, 0.9]
    recalls = [p.recall for p in points]
    assert recalls == sorted(recalls, reverse=True)  # a higher cut-off never finds more
    # Accepting half the recall allows the highest score.
    assert propose_min_score(ROWS, top_k=8, keep_recall=0.5)[1] == 0.85
    # Nothing relevant was recalled: no proposal.
    lost = [{"scored": [[0.4, None]], "units": 1}]
    assert propose_min_score(lost, top_k=8, keep_recall=0.95)[1] is None


def test_the_abstention_proposal_keeps_most_queries_answered():
    probabilities = [i / 20 for i in range(20)]  # 0.0 ... 0.95
    points, value = propose_abstain(probabilities)
    assert value == 0.05  # the 7% lowest (one of 20) abstain, as calibrate_from_qa_pairs
    assert points[0].threshold == 0.0 and points[0].recall == 1.0
    assert points[-1].threshold == 1.0 and points[-1].recall == 0.0
    assert propose_abstain(probabilities[:9])[1] is None  # fewer than MIN_PAIRS


def _run(kb, probabilities=None):
    probabilities = probabilities or [0.3 + i / 100 for i in range(12)]
    results = [
        {"key": f"case:{i}", "kind": "case", "query": f"q{i}", "ndcg@10": 1.0, "recall@10": 1.0}
        | {"ranking": [], "units": 1, "answer_p": p}
        | {"scored": ROWS[i % 2]["scored"]}
        for i, p in enumerate(probabilities)
    ]
    return RegressionRun.objects.create(
        knowledge_base=kb,
        status=RegressionRun.Status.DONE,
        results=results,
        metrics={"ndcg@10": 1.0, "recall@10": 1.0, "worse": []},
        finished_at=timezone.now(),
    )


@pytest.mark.django_db
def test_the_page_shows_the_proposal_and_applies_it_only_when_confirmed(client, make_user, make_kb):
    kb = make_kb(make_user("owner"), "manuals")
    run = _run(kb)
    client.force_login(kb.owner)
    page = client.get(f"/kb/{kb.pk}/cases/thresholds").content.decode()
    assert 'id="proposed-min-score">0.6<' in page and 'id="proposed-abstain">0.3<' in page
    assert page.count("<polyline") >= 3 and 'id="apply-thresholds"' in page
    kb.refresh_from_db()
    assert kb.rerank_min_score is None and kb.abstain_threshold is None  # looking changes nothing

    # A confirmation of an older proposal applies nothing.
    newer = _run(kb)
    client.post(f"/kb/{kb.pk}/cases/thresholds", {"run": run.pk, "field": ["rerank_min_score"]})
    kb.refresh_from_db()
    assert kb.rerank_min_score is None

    client.post(f"/kb/{kb.pk}/cases/thresholds", {"run": newer.pk, "field": ["rerank_min_score"]})
    kb.refresh_from_db()
    assert kb.rerank_min_score == 0.6 and kb.abstain_threshold is None  # only what was ticked
    event = AuditEvent.objects.get(action="knowledge_base.settings")
    assert event.details["changed"] == {"rerank_min_score": [None, 0.6]}
    client.post(
        f"/kb/{kb.pk}/cases/thresholds",
        {"run": newer.pk, "field": ["rerank_min_score", "abstain_threshold"]},
    )
    kb.refresh_from_db()
    assert kb.abstain_threshold == 0.3


@pytest.mark.django_db
def test_a_handful_of_queries_gives_no_rerank_proposal(client, make_user, make_kb):
    kb = make_kb(make_user("owner"), "manuals")
    _run(kb, probabilities=[0.5] * 9)
    client.force_login(kb.owner)
    page = client.get(f"/kb/{kb.pk}/cases/thresholds").content.decode()
    assert 'id="proposed-min-score">—<' in page and "at least 10 are needed" in page
    assert 'id="apply-thresholds"' not in page


@pytest.mark.django_db
def test_without_a_run_there_is_no_proposal(client, make_user, make_kb):
    kb = make_kb(make_user("owner"), "manuals")
    client.force_login(kb.owner)
    page = client.get(f"/kb/{kb.pk}/cases/thresholds").content.decode()
    assert 'id="no-proposal"' in page and 'id="apply-thresholds"' not in page
    client.post(f"/kb/{kb.pk}/cases/thresholds", {"run": "", "field": ["rerank_min_score"]})
    kb.refresh_from_db()
    assert kb.rerank_min_score is None


@pytest.mark.django_db
def test_api_proposal_and_apply_are_for_owners(client, make_user, make_kb):
    kb = make_kb(make_user("owner"), "manuals")
    member, stranger = make_user("member"), make_user("stranger")
    Membership.objects.create(knowledge_base=kb, user=member, role=Role.EDITOR)
    run = _run(kb)
    url = f"/api/v1/knowledge-bases/{kb.pk}/thresholds"

    def call(method, user, data=None):
        _, raw = ApiToken.issue(user)
        return getattr(client, method)(
            url, data, content_type="application/json", headers={"Authorization": f"Bearer {raw}"}
        )

    assert call("get", stranger).status_code == 404
    assert call("get", member).status_code == 403
    proposal = call("get", kb.owner).json()
    assert proposal["run_id"] == run.pk and proposal["rerank_min_score"] == 0.6
    assert proposal["abstain_threshold"] == 0.3 and proposal["rerank_points"]
    assert call("post", member, {"run_id": run.pk}).status_code == 403
    assert call("post", kb.owner, {"run_id": run.pk + 1}).status_code == 409
    assert call("post", kb.owner, {"run_id": run.pk, "fields": ["name"]}).status_code == 400
    applied = call("post", kb.owner, {"run_id": run.pk}).json()
    assert applied["changed"] == {"rerank_min_score": [None, 0.6], "abstain_threshold": [None, 0.3]}
    kb.refresh_from_db()
    assert kb.rerank_min_score == 0.6 and kb.abstain_threshold == 0.3
