"""/api/v1 endpoints: a knowledge base's FAQ entries (curation.faq). Members list them;
owners and editors add, change, import and delete them (403 for a viewer of the knowledge
base, 404 for anyone who cannot see it)."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from ninja import Field, File, Router, Schema, Status
from ninja.errors import HttpError
from ninja.files import UploadedFile
from ninja.pagination import LimitOffsetPagination, paginate

from curation.audit import audit_faq_add, audit_faq_change, audit_faq_import
from curation.faq import (
    FaqDuplicate,
    FaqError,
    faq_add,
    faq_delete,
    faq_entry_get,
    faq_import_csv,
    faq_knowledge_base_get,
    faq_update,
)
from curation.models import FaqEntry
from ragapp.api.schemas import Text
from ragapp.audit import audit_record

router = Router(tags=["faqs"])


class FaqIn(Schema):
    question: Text = Field(..., min_length=1, max_length=1000)
    answer: Text = Field(..., min_length=1, max_length=10_000)


class FaqPatch(Schema):
    question: Text | None = Field(None, min_length=1, max_length=1000)
    answer: Text | None = Field(None, min_length=1, max_length=10_000)


class FaqOut(Schema):
    id: int
    knowledge_base_id: int
    question: str
    answer: str
    chunk_id: int | None
    language: str
    hits: int
    last_hit_at: datetime | None
    created_by: str | None
    source_message_id: int | None
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_created_by(entry: FaqEntry) -> str | None:
        return entry.created_by.username if entry.created_by_id else None


class FaqImportOut(Schema):
    added: int
    ids: list[int]
    errors: list[dict]


def _invalid(exc: FaqError):
    if isinstance(exc, FaqDuplicate):
        raise HttpError(409, str(exc))
    return Status(422, {"error": {"code": "invalid", "message": str(exc)}})


@router.get("/knowledge-bases/{int:kb_id}/faqs", response=list[FaqOut])
@paginate(LimitOffsetPagination)
def list_faqs(request, kb_id: int):
    kb = faq_knowledge_base_get(user=request.user, pk=kb_id, write=False)
    return kb.faq_entries.select_related("created_by")


@router.post("/knowledge-bases/{int:kb_id}/faqs", response={201: FaqOut, 422: dict})
def add_faq(request, kb_id: int, payload: FaqIn):
    kb = faq_knowledge_base_get(user=request.user, pk=kb_id, write=True)
    try:
        with transaction.atomic():
            entry = faq_add(
                knowledge_base=kb,
                question=payload.question,
                answer=payload.answer,
                user=request.user,
            )
            audit_faq_add(request=request, entry=entry)
    except FaqError as exc:
        return _invalid(exc)
    return Status(201, entry)


@router.post("/knowledge-bases/{int:kb_id}/faqs/import", response={201: FaqImportOut, 422: dict})
def import_faqs(request, kb_id: int, file: UploadedFile = File(...)):  # noqa: B008
    """A CSV of question,answer rows (header optional, UTF-8): the good rows are added and
    each bad one is reported as {"row", "message"}."""
    kb = faq_knowledge_base_get(user=request.user, pk=kb_id, write=True)
    try:
        with transaction.atomic():
            result = faq_import_csv(knowledge_base=kb, data=file.read(), user=request.user)
            audit_faq_import(request=request, knowledge_base=kb, result=result)
    except FaqError as exc:
        return _invalid(exc)
    return Status(
        201,
        {
            "added": len(result.added),
            "ids": [e.pk for e in result.added],
            "errors": [{"row": n, "message": m} for n, m in result.errors],
        },
    )


@router.get("/faqs/{int:faq_id}", response=FaqOut)
def get_faq(request, faq_id: int):
    return faq_entry_get(user=request.user, pk=faq_id, write=False)


@router.patch("/faqs/{int:faq_id}", response={200: FaqOut, 422: dict})
def update_faq(request, faq_id: int, payload: FaqPatch):
    entry = faq_entry_get(user=request.user, pk=faq_id, write=True)
    changes = payload.dict(exclude_unset=True)
    before = {"question": entry.question, "answer": entry.answer}
    try:
        with transaction.atomic():
            entry = faq_update(
                entry=entry, question=changes.get("question"), answer=changes.get("answer")
            )
            audit_faq_change(request=request, entry=entry, before=before)
    except FaqError as exc:
        return _invalid(exc)
    return entry


@router.delete("/faqs/{int:faq_id}", response={204: None})
def delete_faq(request, faq_id: int):
    entry = faq_entry_get(user=request.user, pk=faq_id, write=True)
    with transaction.atomic():
        audit_record(request=request, action="faq.delete", obj=entry)
        faq_delete(entry=entry)
    return Status(204, None)
