"""The knowledge base's dashboard charts the regression suite (nDCG@10 and recall@10 of each
finished run) and lists the cases that got worse in the latest run with their rankings
before and after: the same include as the Test cases page, with a link to that page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from curation.cases import regression_run
from curation.models import RegressionRun
from curation.tasks import run_regression
from ingestion.chunk_editing import chunk_update
from ingestion.models import Chunk
from tests.conftest import ingest_texts
from tests.curation.test_cases import DOCS, QUERY, _case

pytestmark = pytest.mark.django_db


@pytest.fixture
def kb(make_user, make_kb):
    return ingest_texts(make_kb(make_user("owner"), "manuals"), DOCS)


def _dashboard(client, user, kb) -> str:
    client.force_login(user)
    response = client.get(reverse("kb_dashboard", args=[kb.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_no_runs_no_regression_chart(client, kb):
    page = _dashboard(client, kb.owner, kb)
    assert "nDCG@10 and recall@10 over time" not in page and "<polyline" not in page


def test_dashboard_charts_the_runs_and_lists_the_cases_that_got_worse(client, kb, make_user):
    case = _case(kb, ranks=(0,))
    first = regression_run(knowledge_base=kb, trigger=RegressionRun.Trigger.MANUAL)
    page = _dashboard(client, kb.owner, kb)
    assert "nDCG@10 and recall@10 over time" in page
    assert f"Latest run #{first.pk}" in page
    assert "nDCG@10 <strong>1.000</strong> · recall@10 <strong>1.000</strong>" in page
    assert 'id="no-worse"' in page
    assert f'href="{reverse("kb_cases", args=[kb.pk])}" id="cases-link"' in page

    chunk = Chunk.objects.get(pk=case.relevant[0]["chunk_id"])
    chunk_update(chunk=chunk, text="Lorem ipsum dolor sit amet, consectetur adipiscing elit.")
    queued = RegressionRun.objects.get(status=RegressionRun.Status.QUEUED)
    run_regression(queued.pk)
    queued.refresh_from_db()
    page = _dashboard(client, kb.owner, kb)
    assert f"Latest run #{queued.pk}" in page
    ndcg = queued.metrics["ndcg@10"]
    assert f"nDCG@10 <strong>{ndcg:.3f}</strong>" in page
    # Two finished runs: a line of two points per metric, labelled by run.
    assert page.count("<polyline") == 2 and f"#{first.pk}<" in page and f"#{queued.pk}<" in page
    assert 'id="worse-cases"' in page and QUERY in page and 'id="no-worse"' not in page
    (worse,) = queued.metrics["worse"]
    before = worse["before"]["ndcg@10"]
    after = worse["after"]["ndcg@10"]
    assert f"nDCG@10 {before:.3f} → {after:.3f}" in page
    assert "Before" in page and "After" in page and "Lorem ipsum" in page

    # Staff look read-only: the chart, but no link to the owners' Test cases page.
    staff = make_user("root", is_staff=True)
    page = _dashboard(client, staff, kb)
    assert f"Latest run #{queued.pk}" in page and 'id="cases-link"' not in page


def test_cases_page_still_draws_the_chart_from_the_include(client, kb):
    _case(kb, ranks=(0,))
    run = regression_run(knowledge_base=kb, trigger=RegressionRun.Trigger.MANUAL)
    client.force_login(kb.owner)
    page = client.get(reverse("kb_cases", args=[kb.pk])).content.decode()
    assert f"Latest run #{run.pk}" in page and page.count("<polyline") == 2
    assert 'id="runs"' in page and 'id="cases-link"' not in page
