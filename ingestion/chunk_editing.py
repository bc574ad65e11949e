"""Chunk management: editors correct, disable, add and delete a document's chunks, and attach
questions or keywords that recall also matches.

Every write re-indexes the chunk at once, in one transaction: token count, the jieba-segmented
keyword column and its tsvector (as `store_chunks` writes them) and one vector per embedder of
the knowledge base. What is embedded and indexed is `Chunk.embed_text`: the heading path, the
text and the questions, one per line, so that a question phrased like a user's finds the chunk.

A parent chunk is only context (the reranker and the LLM read it, recall never does). When a
child's text is edited or the child is deleted, the parent follows only in the simple case:
the child's old text appears verbatim in the parent's and is replaced (or removed) there once.
Otherwise (the child was split across a section boundary) the parent is left as it was.

The document row is locked first, as `store_chunks` does, so an edit and a re-ingest never
interleave; chunks can be edited only while the document is ready. A re-ingest replaces all
chunks, edits included: `manual_edits` counts them so the portal and the API can warn first.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.postgres.search import SearchVector
from django.db import transaction
from django.db.models import Max
from django.http import Http404
from django.utils.translation import gettext as _

from ingestion.chunking import HEADING_SEPARATOR
from ingestion.models import Chunk, ChunkEmbedding, Document, DocumentStatus, KnowledgeBase
from ingestion.selectors import knowledge_bases_for, visible_condition
from ingestion.services import queue_rerank_embedding
from ragapp.validation import text_problem
from retrieval.backends import get_embedder
from retrieval.embedders import approximate_token_count
from retrieval.text import TS_CONFIG, segment

# Limits on what an editor writes: a chunk is a recall unit (RAG_CHUNK_TOKENS, ~200 tokens),
# so 20,000 characters is already far more than one; questions are short by nature.
CHUNK_TEXT_MAX_CHARS = 20_000
CHUNK_MAX_QUESTIONS = 20
CHUNK_QUESTION_MAX_CHARS = 500


class ChunkEditError(ValueError):
    """An edit refused; the message is user-facing."""


class DocumentBusy(ChunkEditError):
    """The document is being (re-)ingested: its chunks are about to be replaced."""


@dataclass(frozen=True)
class _Index:
    token_count: int
    search_text: str
    vectors: dict  # embedder name -> vector


def editable_chunk_get(*, user, pk: int) -> Chunk:
    """A recall chunk of a knowledge base the user may edit; 404 for anything else (a
    viewer, a stranger, a parent chunk or a missing id alike)."""
    chunk = (
        Chunk.objects.filter(
            visible_condition(user=user, prefix="document__"),  # restricted: same 404
            pk=pk,
            is_parent=False,
            knowledge_base__in=knowledge_bases_for(user=user, write=True),
        )
        .select_related("knowledge_base")
        .first()
    )
    if chunk is None:
        raise Http404("No such chunk.")
    return chunk


def clean_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ChunkEditError(_("The text of a chunk cannot be empty."))
    if len(text) > CHUNK_TEXT_MAX_CHARS:
        raise ChunkEditError(
            _("A chunk holds at most %(n)d characters.") % {"n": CHUNK_TEXT_MAX_CHARS}
        )
    if text_problem(text):
        raise ChunkEditError(_("The text contains characters that cannot be stored."))
    return text


def clean_questions(questions) -> list[str]:
    """Stripped, blank lines and repeats dropped, within the limits."""
    out: list[str] = []
    for question in questions or []:
        question = (question or "").strip()
        if not question or question in out:
            continue
        if len(question) > CHUNK_QUESTION_MAX_CHARS:
            raise ChunkEditError(
                _("A question holds at most %(n)d characters.") % {"n": CHUNK_QUESTION_MAX_CHARS}
            )
        if text_problem(question):
            raise ChunkEditError(_("The text contains characters that cannot be stored."))
        out.append(question)
    if len(out) > CHUNK_MAX_QUESTIONS:
        raise ChunkEditError(_("At most %(n)d questions per chunk.") % {"n": CHUNK_MAX_QUESTIONS})
    return out


def _index_for(kb: KnowledgeBase, chunk: Chunk) -> _Index:
    """Computed before the transaction: embedding is the slow part and holds no lock."""
    embed_text = chunk.embed_text
    if kb.embedders:
        token_count = get_embedder(kb.embedders[0]).count_tokens(chunk.text)
    else:
        token_count = approximate_token_count(chunk.text)
    vectors = {name: get_embedder(name).embed_documents([embed_text])[0] for name in kb.embedders}
    return _Index(token_count, segment(embed_text), vectors)


def _ensure_ready(status: str) -> None:
    if status != DocumentStatus.READY:
        raise DocumentBusy(_("This document is being processed; edit its chunks once it is ready."))


def _lock_document(document_id: int) -> Document:
    document = Document.objects.select_for_update().get(pk=document_id)
    _ensure_ready(document.status)
    return document


def _write_index(chunk: Chunk, index: _Index) -> None:
    chunk.token_count = index.token_count
    chunk.search_text = index.search_text
    chunk.search_length = len(index.search_text.split())
    Chunk.objects.filter(pk=chunk.pk).update(
        text=chunk.text,
        questions=chunk.questions,
        enabled=chunk.enabled,
        edited=True,
        token_count=chunk.token_count,
        search_text=chunk.search_text,
        search_length=chunk.search_length,
    )
    # From the stored column, exactly as store_chunks builds it.
    Chunk.objects.filter(pk=chunk.pk).update(
        search_vector=SearchVector("search_text", config=TS_CONFIG)
    )
    ChunkEmbedding.objects.filter(chunk_id=chunk.pk).delete()
    ChunkEmbedding.objects.bulk_create(
        ChunkEmbedding(
            chunk_id=chunk.pk,
            knowledge_base_id=chunk.knowledge_base_id,
            embedder=name,
            embedding=vector,
        )
        for name, vector in index.vectors.items()
    )


def _parent_follow(chunk: Chunk, old_text: str, new_text: str) -> None:
    """The simple case only (module docstring): the old text verbatim in the parent."""
    if not chunk.parent_id or old_text == new_text:
        return
    parent = Chunk.objects.select_for_update().filter(pk=chunk.parent_id).first()
    if parent is None or old_text not in parent.text:
        return
    text = parent.text.replace(old_text, new_text, 1)
    if not new_text:
        text = text.replace("\n\n\n\n", "\n\n").strip()
    Chunk.objects.filter(pk=parent.pk).update(text=text)


def _regression(kb: KnowledgeBase) -> None:
    """An edit moves the ranking: queue the knowledge base's regression suite (debounced)."""
    from curation.tasks import enqueue_regression

    enqueue_regression(knowledge_base=kb, trigger="chunk_edit")


def chunk_update(
    *,
    chunk: Chunk,
    text: str | None = None,
    enabled: bool | None = None,
    questions: list[str] | None = None,
) -> Chunk:
    """Change a chunk's text, enabled state and/or questions; None leaves a field as it is.
    A new text or new questions re-embed and re-index the chunk at once."""
    if chunk.is_parent:
        raise Chunk.DoesNotExist("parents are context, not editable chunks")
    new_text = clean_text(text) if text is not None else None
    new_questions = clean_questions(questions) if questions is not None else None
    reindex = (new_text is not None and new_text != chunk.text) or (
        new_questions is not None and new_questions != list(chunk.questions)
    )
    draft = Chunk(
        pk=chunk.pk,
        knowledge_base_id=chunk.knowledge_base_id,
        heading_path=chunk.heading_path,
        text=new_text if new_text is not None else chunk.text,
        questions=new_questions if new_questions is not None else list(chunk.questions),
    )
    # Checked again under the lock; this first look spares the embedding of a refused edit.
    _ensure_ready(Document.objects.values_list("status", flat=True).get(pk=chunk.document_id))
    index = _index_for(chunk.knowledge_base, draft) if reindex else None
    with transaction.atomic():
        _lock_document(chunk.document_id)
        current = Chunk.objects.select_for_update().get(pk=chunk.pk, is_parent=False)
        old_text = current.text
        toggled = enabled is not None and enabled != current.enabled  # the row, not the caller's
        current.text = draft.text
        current.questions = draft.questions
        if enabled is not None:
            current.enabled = enabled
        if index is not None:
            _write_index(current, index)
            _parent_follow(current, old_text, current.text)
        elif toggled:
            Chunk.objects.filter(pk=current.pk).update(enabled=enabled, edited=True)
    current.refresh_from_db()
    if index is not None:  # its second-stage vectors went with the old text
        queue_rerank_embedding(current.knowledge_base, [current.document_id])
    if index is not None or toggled:
        _regression(current.knowledge_base)
    return current


def chunk_add(*, document: Document, text: str, questions: list[str] | None = None) -> Chunk:
    """Append a chunk written by an editor: the last ordinal, no parent, no page, and the
    document's first heading (the closest thing to a context it has)."""
    text = clean_text(text)
    questions = clean_questions(questions)
    _ensure_ready(Document.objects.values_list("status", flat=True).get(pk=document.pk))
    first = (
        Chunk.objects.filter(document=document, is_parent=False)
        .exclude(heading_path="")
        .order_by("ordinal")
        .values_list("heading_path", flat=True)
        .first()
    )
    heading = (first or "").split(HEADING_SEPARATOR)[0]
    kb = document.knowledge_base
    chunk = Chunk(
        document_id=document.pk,
        knowledge_base_id=document.knowledge_base_id,
        text=text,
        heading_path=heading,
        questions=questions,
        language=document.language,
        edited=True,
    )
    index = _index_for(kb, chunk)
    with transaction.atomic():
        _lock_document(document.pk)
        last = Chunk.objects.filter(document_id=document.pk).aggregate(m=Max("ordinal"))["m"]
        chunk.ordinal = 0 if last is None else last + 1
        chunk.save()
        _write_index(chunk, index)
    chunk.refresh_from_db()
    queue_rerank_embedding(kb, [document.pk])
    _regression(kb)
    return chunk


def chunk_delete(*, chunk: Chunk) -> None:
    """Remove a chunk and its vectors (cascade); the deletion counts as a manual edit."""
    if chunk.is_parent:
        raise Chunk.DoesNotExist("parents are context, not editable chunks")
    with transaction.atomic():
        document = _lock_document(chunk.document_id)
        current = Chunk.objects.select_for_update().filter(pk=chunk.pk).first()
        if current is None:
            raise Chunk.DoesNotExist(chunk.pk)
        _parent_follow(current, current.text, "")
        current.delete()
        stats = dict(document.stats or {})
        stats["chunks_deleted"] = int(stats.get("chunks_deleted", 0)) + 1
        Document.objects.filter(pk=document.pk).update(stats=stats)
    _regression(document.knowledge_base)


def manual_edits(*, document: Document, edited: int | None = None) -> int:
    """Chunks an editor changed or added, plus those deleted, since the last ingest (which
    resets both: it replaces the chunks and the stats). `edited` when already counted."""
    if edited is None:
        edited = Chunk.objects.filter(document=document, edited=True).count()
    return edited + int((document.stats or {}).get("chunks_deleted", 0))
