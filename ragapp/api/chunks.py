"""A document's chunks: list and search them; editors and owners edit, disable, add and
delete them (ingestion.chunk_editing). Anyone else gets the same 404 as for a missing chunk."""

from __future__ import annotations

from django.db.models import Q
from django.http import Http404
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError

from ingestion.chunk_editing import (
    ChunkEditError,
    DocumentBusy,
    chunk_add,
    chunk_delete,
    chunk_update,
    editable_chunk_get,
)
from ingestion.models import Chunk
from ingestion.selectors import document_get
from ragapp.api.schemas import ChunkIn, ChunkOut, ChunkPage, ChunkPatch, Text

router = Router(tags=["chunks"])


class ChunkFilter(Schema):
    offset: int = Field(0, ge=0)
    limit: int = Field(100, ge=1, le=500)
    q: Text = Field("", max_length=500)


def chunk_out(c: Chunk) -> dict:
    return {
        "id": c.pk,
        "ordinal": c.ordinal,
        "text": c.text,
        "heading": c.heading_path,
        "page": c.page,
        "sheet": c.sheet,
        "slide": c.slide,
        "kind": c.kind,
        "token_count": c.token_count,
        "parent_id": c.parent_id,
        "enabled": c.enabled,
        "questions": list(c.questions),
        "edited": c.edited,
    }


def _invalid(exc: ChunkEditError):
    if isinstance(exc, DocumentBusy):
        raise HttpError(409, str(exc))
    return Status(422, {"error": {"code": "invalid", "message": str(exc)}})


@router.get("/documents/{int:doc_id}/chunks", response=ChunkPage)
def list_chunks(request, doc_id: int, filters: Query[ChunkFilter]):
    """The document's recall chunks in order (parents are internal context); `q` keeps those
    whose text or heading contains it."""
    document = document_get(user=request.user, pk=doc_id)
    chunks = document.chunks.filter(is_parent=False).order_by("ordinal")
    if filters.q.strip():
        q = filters.q.strip()
        chunks = chunks.filter(Q(text__icontains=q) | Q(heading_path__icontains=q))
    page = chunks[filters.offset : filters.offset + filters.limit]
    return {"items": [chunk_out(c) for c in page], "count": chunks.count()}


@router.post("/documents/{int:doc_id}/chunks", response={201: ChunkOut, 422: dict})
def add_chunk(request, doc_id: int, payload: ChunkIn):
    document = document_get(user=request.user, pk=doc_id, write=True)
    try:
        chunk = chunk_add(document=document, text=payload.text)
    except ChunkEditError as exc:
        return _invalid(exc)
    return Status(201, chunk_out(chunk))


@router.patch("/chunks/{int:chunk_id}", response={200: ChunkOut, 422: dict})
def update_chunk(request, chunk_id: int, payload: ChunkPatch):
    chunk = editable_chunk_get(user=request.user, pk=chunk_id)
    changes = payload.dict(exclude_unset=True)
    try:
        chunk = chunk_update(
            chunk=chunk,
            text=changes.get("text"),
            enabled=changes.get("enabled"),
            questions=changes.get("questions"),
        )
    except Chunk.DoesNotExist:
        raise Http404("No such chunk.") from None
    except ChunkEditError as exc:
        return _invalid(exc)
    return chunk_out(chunk)


@router.delete("/chunks/{int:chunk_id}", response={204: None})
def delete_chunk(request, chunk_id: int):
    chunk = editable_chunk_get(user=request.user, pk=chunk_id)
    try:
        chunk_delete(chunk=chunk)
    except Chunk.DoesNotExist:
        raise Http404("No such chunk.") from None
    except DocumentBusy as exc:
        raise HttpError(409, str(exc)) from None
    return Status(204, None)
