"""/api/v1 endpoints: a knowledge base's saved test cases, its regression runs and the
thresholds proposed from them (curation.cases, curation.thresholds). Owners only: a member
gets 403, anyone else 404."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from django.db import transaction
from django.http import Http404
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError

from curation.cases import CaseError, case_delete, case_save, regression_enqueue, suite_size
from curation.models import RegressionRun, SavedCase
from curation.tasks import enqueue_regression
from curation.thresholds import APPLICABLE, StaleProposal, thresholds_apply, thresholds_propose
from ingestion.selectors import knowledge_base_get, knowledge_bases_for
from ragapp.api.schemas import Text
from ragapp.audit import audit_settings

router = Router(tags=["test cases"])


class CaseIn(Schema):
    query: Text = Field(..., min_length=1, max_length=4000)
    chunk_ids: list[int] = Field(..., min_length=1, max_length=100)


class CaseOut(Schema):
    id: int
    query: str
    relevant: list[dict]
    created_at: datetime


class RunOut(Schema):
    id: int
    trigger: str
    status: str
    metrics: dict
    error: str
    created_at: datetime
    finished_at: datetime | None


class RunDetailOut(RunOut):
    results: list[dict]


class ThresholdsIn(Schema):
    run_id: int
    fields: list[str] = Field(default_factory=lambda: list(APPLICABLE))


def _case_out(case: SavedCase) -> dict:
    return {
        "id": case.pk,
        "query": case.query,
        "relevant": case.relevant,
        "created_at": case.created_at,
    }


@router.get("/knowledge-bases/{int:kb_id}/test-cases", response=list[CaseOut])
def list_cases(request, kb_id: int):
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    return [_case_out(c) for c in kb.saved_cases.all()]


@router.post("/knowledge-bases/{int:kb_id}/test-cases", response={201: CaseOut})
def create_case(request, kb_id: int, payload: CaseIn):
    """Save a query with the chunks (ids from search or hit testing) that answer it."""
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    try:
        case = case_save(
            knowledge_base=kb, query=payload.query, chunk_ids=payload.chunk_ids, user=request.user
        )
    except CaseError as exc:
        raise HttpError(400, str(exc)) from None
    return Status(201, _case_out(case))


@router.delete("/test-cases/{int:case_id}", response={204: None})
def delete_case(request, case_id: int):
    case = SavedCase.objects.filter(
        pk=case_id, knowledge_base__in=knowledge_bases_for(user=request.user)
    ).first()
    if case is None:
        raise Http404
    knowledge_base_get(user=request.user, pk=case.knowledge_base_id, owner=True)
    case_delete(case=case)
    return Status(204, None)


@router.get("/knowledge-bases/{int:kb_id}/regression-runs", response=list[RunOut])
def list_runs(request, kb_id: int):
    """The latest 50 runs, newest first; `metrics.worse` lists the queries that got worse
    than in the run before, with both rankings."""
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    return list(RegressionRun.objects.filter(knowledge_base=kb)[:50])


@router.post("/knowledge-bases/{int:kb_id}/regression-runs", response={202: RunOut})
def start_run(request, kb_id: int):
    """Queue a run; when one is already queued, that one is returned."""
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    if not suite_size(kb):
        raise HttpError(409, "The suite is empty: save a test case or upload QA pairs first.")
    run = regression_enqueue(knowledge_base=kb, trigger=RegressionRun.Trigger.MANUAL)
    if run is None:
        run = RegressionRun.objects.filter(
            knowledge_base=kb, status=RegressionRun.Status.QUEUED
        ).first()
    return Status(202, run)


@router.get("/regression-runs/{int:run_id}", response=RunDetailOut)
def get_run(request, run_id: int):
    run = RegressionRun.objects.filter(
        pk=run_id, knowledge_base__in=knowledge_bases_for(user=request.user)
    ).first()
    if run is None:
        raise Http404
    knowledge_base_get(user=request.user, pk=run.knowledge_base_id, owner=True)
    return run


@router.get("/knowledge-bases/{int:kb_id}/thresholds")
def get_thresholds(request, kb_id: int):
    """The rerank cut-off and abstention threshold proposed from the latest finished run,
    with the precision/recall points behind them (`run_id` is needed to apply them)."""
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    return asdict(thresholds_propose(knowledge_base=kb))


@router.post("/knowledge-bases/{int:kb_id}/thresholds")
def apply_thresholds(request, kb_id: int, payload: ThresholdsIn):
    """Apply the proposed values named in `fields` (rerank_min_score, abstain_threshold) of
    the proposal from run `run_id`; 409 when a newer run changed the proposal."""
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    unknown = set(payload.fields) - set(APPLICABLE)
    if unknown:
        raise HttpError(400, f"unknown fields: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        try:
            changes = thresholds_apply(
                knowledge_base=kb, run_id=payload.run_id, fields=payload.fields
            )
        except StaleProposal as exc:
            raise HttpError(409, str(exc)) from None
        audit_settings(request=request, knowledge_base=kb, changes=changes)
        enqueue_regression(
            knowledge_base=kb, trigger=RegressionRun.Trigger.SETTINGS, changed=changes
        )
    return {
        "changed": changes,
        "rerank_min_score": kb.rerank_min_score,
        "abstain_threshold": kb.abstain_threshold,
    }
