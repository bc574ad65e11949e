"""/api/v1 endpoints: knowledge gaps (owners only), grouped failing questions and the actions
on them."""

from __future__ import annotations

from django.db import transaction
from django.shortcuts import get_object_or_404
from ninja import Router, Schema
from ninja.errors import HttpError

from curation.audit import audit_faq_add
from curation.faq import FaqError
from curation.gaps import (
    gap_answer,
    gap_mark_out_of_scope,
    gap_reopen,
    gaps_for,
    gaps_refresh_quietly,
    recheck_pending,
)
from curation.models import Gap, GapStatus
from curation.tasks import recheck_enqueue
from ingestion.selectors import knowledge_base_get

router = Router(tags=["gaps"])


class GapAnswerIn(Schema):
    answer: str
    question: str | None = None  # the FAQ entry's question; default: the gap's label


def gap_out(gap: Gap) -> dict:
    questions = list(gap.questions.all())
    return {
        "id": gap.pk,
        "label": gap.label,
        "count": len(questions),
        "questions": [q.question for q in questions],
        "status": gap.status,
        "language": gap.language,
        "first_seen": gap.first_seen,
        "last_seen": gap.last_seen,
        "reasons": {
            reason: sum(q.reason == reason for q in questions)
            for reason in sorted({q.reason for q in questions})
        },
        "asked": [
            {
                "question": q.question,
                "reason": q.reason,
                "asked_at": q.asked_at,
                "message_id": q.message_id,
            }
            for q in questions
        ],
        "faq_entry_id": gap.faq_entry_id,
        "document_id": gap.document_id,
        "action_at": gap.action_at,
        "recheck": gap.recheck or {},
        "recheck_pending": recheck_pending(gap),
    }


def _gap(request, kb_id: int, gap_id: int) -> Gap:
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    gaps = Gap.objects.select_related("knowledge_base")
    return get_object_or_404(gaps, pk=gap_id, knowledge_base=kb)


@router.get("/knowledge-bases/{int:kb_id}/gaps")
def list_gaps(request, kb_id: int, status: str | None = None):
    """The knowledge base's gaps, most-asked first; the failing answers since the last call
    are filed first. `status`: open | answered | document_added | out_of_scope."""
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    if status and status not in GapStatus.values:
        raise HttpError(400, f"unknown status {status!r}")
    gaps_refresh_quietly(knowledge_base=kb)
    gaps = gaps_for(knowledge_base=kb, status=status).prefetch_related("questions")
    return [gap_out(g) for g in gaps]


@router.get("/knowledge-bases/{int:kb_id}/gaps/{int:gap_id}")
def get_gap(request, kb_id: int, gap_id: int):
    return gap_out(_gap(request, kb_id, gap_id))


@router.post("/knowledge-bases/{int:kb_id}/gaps/{int:gap_id}/answer")
def answer_gap(request, kb_id: int, gap_id: int, payload: GapAnswerIn):
    """Write the answer: it becomes an FAQ entry; the gap's questions are asked again."""
    gap = _gap(request, kb_id, gap_id)
    try:
        with transaction.atomic():
            entry = gap_answer(
                gap=gap, answer=payload.answer, question=payload.question, user=request.user
            )
            audit_faq_add(request=request, entry=entry)
            recheck_enqueue(gap)
    except FaqError as exc:
        raise HttpError(400, str(exc)) from exc
    return gap_out(gap)


@router.post("/knowledge-bases/{int:kb_id}/gaps/{int:gap_id}/out-of-scope")
def out_of_scope_gap(request, kb_id: int, gap_id: int):
    gap = _gap(request, kb_id, gap_id)
    with transaction.atomic():
        gap_mark_out_of_scope(gap=gap, user=request.user)
        recheck_enqueue(gap)
    return gap_out(gap)


@router.post("/knowledge-bases/{int:kb_id}/gaps/{int:gap_id}/reopen")
def reopen_gap(request, kb_id: int, gap_id: int):
    gap = _gap(request, kb_id, gap_id)
    gap_reopen(gap=gap, user=request.user)
    return gap_out(gap)


@router.post("/knowledge-bases/{int:kb_id}/gaps/{int:gap_id}/recheck", response={202: dict})
def recheck_gap(request, kb_id: int, gap_id: int):
    """Ask the gap's questions again (in the background); GET the gap for the outcome."""
    gap = _gap(request, kb_id, gap_id)
    recheck_enqueue(gap)
    return 202, gap_out(gap)
