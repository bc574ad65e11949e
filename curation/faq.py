"""FAQ answers: an owner's question -> answer pairs (QAnything's FAQ, Dify's annotation
replies).

A user question that matches an entry's question at or above the calibrated similarity gets
the stored answer directly (chat mode "faq", the entry as its only source). Below it the
entry is an ordinary passage: each entry has one chunk (kind "faq", text "question\\nanswer")
in its knowledge base's FAQ document, embedded and keyword-indexed by
`ingestion.chunk_editing` exactly like an editor's chunk, so recall finds it.

The direct match compares the question's vector under one embedder (RAG_FAQ_EMBEDDERS, see
settings) with the entry's question vector stored when the entry was written (and written
again, on the next match, when the settings choose another embedder for it); a question
equal to the entry's question up to case, spaces and punctuation matches under any embedder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import BooleanField, ExpressionWrapper, F, Q
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext as _
from pgvector.django import CosineDistance

from chat.abstention import content_words, is_specific, stem
from curation.models import FaqEntry
from ingestion.chunk_editing import chunk_add, chunk_update
from ingestion.models import Chunk, ChunkKind, Document, DocumentStatus, KnowledgeBase
from ingestion.selectors import knowledge_base_get, knowledge_bases_for
from ragapp.validation import text_problem
from retrieval.backends import embedder_available, get_embedder
from retrieval.fusion import detect_query_language
from retrieval.text import segment

# The FAQ document of a knowledge base is found by this content hash (unique per knowledge
# base, and no uploaded file's sha256 can be it), and marked in its stats for the pages.
FAQ_DOCUMENT_HASH = hashlib.sha256(b"ragapp:faq-document").hexdigest()
FAQ_DOCUMENT_NAME = "FAQ"
QUESTION_MAX_CHARS = 1000
ANSWER_MAX_CHARS = 10_000
# Header cells that mark the first CSV row as a header rather than an entry.
_HEADERS = {("question", "answer"), ("问题", "答案"), ("q", "a")}


class FaqError(ValueError):
    """An entry refused; the message is user-facing."""


class FaqDuplicate(FaqError):
    """The knowledge base already has an entry with this question."""


@dataclass(frozen=True)
class FaqMatch:
    entry: FaqEntry
    score: float  # cosine of the two questions (1.0 for an equal question)
    embedder: str  # "" when the questions are equal as text
    threshold: float


@dataclass(frozen=True)
class CsvImport:
    added: list[FaqEntry]
    errors: list[tuple[int, str]]  # (row number, 1-based as a spreadsheet shows it; message)


def faq_knowledge_base_get(*, user, pk: int, write: bool) -> KnowledgeBase:
    """A knowledge base whose FAQ the user may read (write=True: edit, as its owners and
    editors may). 404 when they cannot see it at all; 403 for a member who may only read."""
    kb = knowledge_base_get(user=user, pk=pk)
    if write and not knowledge_bases_for(user=user, write=True).filter(pk=kb.pk).exists():
        raise PermissionDenied(_("Only the owners and editors of this knowledge base can do this."))
    return kb


def faq_entry_get(*, user, pk: int, write: bool) -> FaqEntry:
    """An entry of a knowledge base the user can see; 404 otherwise, 403 as above."""
    entry = (
        FaqEntry.objects.filter(pk=pk, knowledge_base__in=knowledge_bases_for(user=user))
        .select_related("knowledge_base", "created_by", "chunk")
        .first()
    )
    if entry is None:
        raise Http404("No such FAQ entry.")
    faq_knowledge_base_get(user=user, pk=entry.knowledge_base_id, write=write)
    return entry


def normalise_question(text: str) -> str:
    """Case, width, spaces and punctuation do not make another question."""
    text = unicodedata.normalize("NFKC", text or "").casefold()
    return "".join(ch for ch in text if ch.isalnum())


def faq_embedder(knowledge_base: KnowledgeBase, language: str) -> str:
    """The embedder that compares questions in `language` for this knowledge base: the
    first of RAG_FAQ_EMBEDDERS[language] it has or that is one of RAG_QUESTION_EMBEDDERS
    (entries keep their own vectors: no chunk needs embedding with it), else its first;
    "" for a keyword-only knowledge base (it loads no model)."""
    names = [n for n in knowledge_base.embedders or [] if n in settings.RAG_EMBEDDERS]
    if not names:
        return ""
    usable = names + [n for n in settings.RAG_QUESTION_EMBEDDERS if embedder_available(n)]
    for name in settings.RAG_FAQ_EMBEDDERS.get(language, []):
        if name in usable:
            return name
    return names[0]


def match_threshold(embedder: str, language: str = "") -> float:
    thresholds = settings.RAG_FAQ_MATCH_THRESHOLDS
    value = thresholds.get(f"{embedder}:{language}", thresholds.get(embedder))
    return float(settings.RAG_FAQ_MATCH_THRESHOLD if value is None else value)


def question_vector(embedder: str, question: str) -> list[float]:
    """The asked question's vector: a query."""
    return [float(x) for x in get_embedder(embedder).embed_query(question)]


def entry_vectors(embedder: str, questions: Sequence[str]) -> list[list[float]]:
    """Entry questions' vectors: passages. The same thing for MiniLM and USE; for e5 the
    asked question as "query: " against the entry's as "passage: " answers 19% of Chinese
    paraphrases at 0.95 precision, query against query 10% or less (bench/faq)."""
    if not questions:
        return []
    return [[float(x) for x in v] for v in get_embedder(embedder).embed_documents(questions)]


def best_match(vector, stored: Sequence[Sequence[float]]) -> tuple[int, float]:
    """Index and cosine of the stored vector nearest to `vector` ((-1, -1.0) when none)."""
    if not len(stored):
        return -1, -1.0
    matrix = np.asarray(stored, dtype=np.float32)
    query = np.asarray(vector, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(query) or 1.0)
    scores = matrix @ query / np.where(norms == 0, 1.0, norms)
    i = int(np.argmax(scores))
    return i, float(scores[i])


def unmentioned_names(question: str, entry_text: str) -> list[str]:
    """Names and terms in the question (chat.abstention.is_specific: "OneNote", "SCIM",
    "2FA") that the entry's question and answer never mention. The sentence encoders put
    "import from OneNote" next to "import from Evernote" (cosine 0.92 under USE, above any
    paraphrase in bench/faq), so a name the entry does not know vetoes the direct answer."""
    known = content_words(entry_text)  # stems: "notes" in the entry knows "note"
    # The words as written: a stem ("remov") is no word and looks like a name.
    missing = {t for t in segment(question).split() if stem(t) not in known}
    return sorted(t for t in missing if is_specific(t))


def _clean(question: str, answer: str) -> tuple[str, str]:
    question, answer = (question or "").strip(), (answer or "").strip()
    if not question or not answer:
        raise FaqError(_("An FAQ entry needs a question and an answer."))
    if len(question) > QUESTION_MAX_CHARS:
        raise FaqError(_("A question holds at most %(n)d characters.") % {"n": QUESTION_MAX_CHARS})
    if len(answer) > ANSWER_MAX_CHARS:
        raise FaqError(_("An answer holds at most %(n)d characters.") % {"n": ANSWER_MAX_CHARS})
    if text_problem(question) or text_problem(answer):
        raise FaqError(_("The text contains characters that cannot be stored."))
    if not normalise_question(question):
        raise FaqError(_("An FAQ entry needs a question and an answer."))
    return question, answer


def _check_unique(knowledge_base: KnowledgeBase, question: str, exclude: int | None = None):
    key = normalise_question(question)
    others = FaqEntry.objects.filter(knowledge_base=knowledge_base).exclude(pk=exclude)
    if any(normalise_question(q) == key for q in others.values_list("question", flat=True)):
        raise FaqDuplicate(_("This knowledge base already has an FAQ entry with this question."))


def faq_document(*, knowledge_base: KnowledgeBase) -> Document:
    """The knowledge base's FAQ document, created on first use: ready at once (its chunks
    are written by this module, never by ingestion)."""
    document = Document.objects.filter(
        knowledge_base=knowledge_base, content_hash=FAQ_DOCUMENT_HASH
    ).first()
    if document is not None:
        return document
    try:
        with transaction.atomic():
            return Document.objects.create(
                knowledge_base=knowledge_base,
                original_name=FAQ_DOCUMENT_NAME,
                mime_type="text/plain",
                content_hash=FAQ_DOCUMENT_HASH,
                status=DocumentStatus.READY,
                progress=100,
                stats={"faq": True},
            )
    except IntegrityError:  # created meanwhile by a concurrent add
        return Document.objects.get(knowledge_base=knowledge_base, content_hash=FAQ_DOCUMENT_HASH)


def is_faq_document(document: Document) -> bool:
    return document.content_hash == FAQ_DOCUMENT_HASH


def _chunk_text(question: str, answer: str) -> str:
    return f"{question}\n{answer}"


def faq_add(
    *,
    knowledge_base: KnowledgeBase,
    question: str,
    answer: str,
    user=None,
    source_message=None,
) -> FaqEntry:
    """A new entry, its recall chunk and its question vector."""
    question, answer = _clean(question, answer)
    _check_unique(knowledge_base, question)
    language = detect_query_language(question)
    embedder = faq_embedder(knowledge_base, language)
    vector = entry_vectors(embedder, [question])[0] if embedder else []
    document = faq_document(knowledge_base=knowledge_base)
    with transaction.atomic():
        chunk = chunk_add(document=document, text=_chunk_text(question, answer))
        Chunk.objects.filter(pk=chunk.pk).update(kind=ChunkKind.FAQ, language=language)
        return FaqEntry.objects.create(
            knowledge_base=knowledge_base,
            question=question,
            answer=answer,
            chunk=chunk,
            embedder=embedder,
            embedding=vector,
            language=language,
            created_by=user if user is not None and user.is_authenticated else None,
            source_message=source_message,
        )


def faq_update(
    *, entry: FaqEntry, question: str | None = None, answer: str | None = None
) -> FaqEntry:
    """Change the question and/or the answer; the chunk and the vector follow."""
    question, answer = _clean(
        entry.question if question is None else question,
        entry.answer if answer is None else answer,
    )
    kb = entry.knowledge_base
    _check_unique(kb, question, exclude=entry.pk)
    language = detect_query_language(question)
    embedder = faq_embedder(kb, language)
    if question != entry.question or embedder != entry.embedder or not entry.embedding:
        entry.language, entry.embedder = language, embedder
        entry.embedding = entry_vectors(embedder, [question])[0] if embedder else []
    entry.question, entry.answer = question, answer
    with transaction.atomic():
        chunk = Chunk.objects.filter(pk=entry.chunk_id).first() if entry.chunk_id else None
        if chunk is None:  # removed on the document page: write it again
            chunk = chunk_add(
                document=faq_document(knowledge_base=kb), text=_chunk_text(question, answer)
            )
            Chunk.objects.filter(pk=chunk.pk).update(kind=ChunkKind.FAQ)
            entry.chunk = chunk
        elif chunk.text != _chunk_text(question, answer):
            chunk_update(chunk=chunk, text=_chunk_text(question, answer))
        Chunk.objects.filter(pk=chunk.pk).update(language=entry.language)
        entry.save()
    return entry


def faq_delete(*, entry: FaqEntry) -> None:
    """The entry and its recall chunk (its vectors go with it)."""
    with transaction.atomic():
        if entry.chunk_id:
            Chunk.objects.filter(pk=entry.chunk_id).delete()
        entry.delete()


def faq_import_csv(*, knowledge_base: KnowledgeBase, data: bytes, user=None) -> CsvImport:
    """Rows of question,answer (a header row is optional), UTF-8 with or without a BOM.
    Good rows are added; every bad row is reported with its number and why."""
    if len(data) > settings.RAG_FAQ_CSV_MAX_BYTES:
        raise FaqError(
            _("The file is larger than %(n)d KB.") % {"n": settings.RAG_FAQ_CSV_MAX_BYTES // 1024}
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FaqError(_("The file is not UTF-8 text.")) from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise FaqError(_("The file is not valid CSV: %(error)s") % {"error": exc}) from None
    numbered = [(n, row) for n, row in enumerate(rows, start=1) if any(c.strip() for c in row)]
    if numbered and tuple(c.strip().casefold() for c in numbered[0][1][:2]) in _HEADERS:
        numbered = numbered[1:]
    if len(numbered) > settings.RAG_FAQ_CSV_MAX_ROWS:
        raise FaqError(_("At most %(n)d entries per file.") % {"n": settings.RAG_FAQ_CSV_MAX_ROWS})
    added: list[FaqEntry] = []
    errors: list[tuple[int, str]] = []
    for n, row in numbered:
        if len(row) != 2:
            errors.append(
                (n, _("Expected 2 columns (question, answer), found %(n)d.") % {"n": len(row)})
            )
            continue
        try:
            added.append(
                faq_add(knowledge_base=knowledge_base, question=row[0], answer=row[1], user=user)
            )
        except FaqError as exc:
            errors.append((n, str(exc)))
    return CsvImport(added, errors)


def faq_match(*, knowledge_bases: Sequence[KnowledgeBase], question: str) -> FaqMatch | None:
    """The entry whose question best matches `question` at or above the threshold of the
    embedder and language that compare them, among the enabled entries of these knowledge
    bases (already scoped to the user); None when none does. Only entries in the question's
    language are compared: an embedder for one language (MiniLM) scores another's text at
    random, and an answer in the other language would not do anyway."""
    key = normalise_question(question)
    if not key or not knowledge_bases:
        return None
    # An editor who disables the FAQ chunk on the document page switches the entry off.
    enabled = FaqEntry.objects.filter(knowledge_base__in=list(knowledge_bases)).filter(
        Q(chunk__isnull=True) | Q(chunk__enabled=True)
    )
    # Plain rows of what the match reads before comparing vectors; the vectors stay in the
    # database, which compares them. Loading every entry with its JSON vector took 2.4 s
    # per question at 10,000 entries, this 0.08 s (manage.py bench_faq_scale, p50).
    has_vector = ExpressionWrapper(Q(vector__isnull=False), output_field=BooleanField())
    entries = [
        _Entry(*row)
        for row in enabled.annotate(has_vector=has_vector).values_list(
            "pk", "question", "embedder", "language", "knowledge_base_id", "has_vector"
        )
    ]
    for entry in entries:
        if normalise_question(entry.question) == key:
            exact = FaqEntry.objects.select_related("knowledge_base").get(pk=entry.pk)
            return FaqMatch(exact, 1.0, "", 1.0)
    _follow_embedder_settings(entries, {kb.pk: kb for kb in knowledge_bases})
    language = detect_query_language(question)
    names = {
        e.embedder
        for e in entries
        if e.embedder in settings.RAG_EMBEDDERS
        and e.has_vector
        and not (language and e.language and e.language != language)
    }
    best: FaqMatch | None = None
    for name in sorted(names):
        candidates = enabled.filter(embedder=name, vector__isnull=False)
        if language:
            candidates = candidates.filter(Q(language="") | Q(language=language))
        nearest = (
            candidates.select_related("knowledge_base")
            .defer("embedding", "vector")
            .annotate(distance=CosineDistance("vector", question_vector(name, question)))
            .order_by("distance", "-updated_at", "-id")
            .first()
        )
        if nearest is None:
            continue
        score = 1.0 - float(nearest.distance)
        if math.isnan(score):  # a zero vector (a question with no words the model knows)
            continue
        threshold = match_threshold(name, language or nearest.language)
        if score < threshold:
            continue
        if best is not None and score - threshold <= best.score - best.threshold:
            continue
        if unmentioned_names(question, _chunk_text(nearest.question, nearest.answer)):
            continue
        best = FaqMatch(nearest, score, name, threshold)
    return best


@dataclass
class _Entry:
    """What faq_match reads of an entry before the vectors are compared."""

    pk: int
    question: str
    embedder: str
    language: str
    knowledge_base_id: int
    has_vector: bool


def _follow_embedder_settings(entries: Sequence[_Entry], knowledge_bases: dict) -> None:
    """Entries whose embedder is no longer the one the settings choose for their knowledge
    base and language (RAG_FAQ_EMBEDDERS changed, or the knowledge base's embedders) get
    their question embedded again, in place and in the database, once."""
    chosen: dict[tuple[int, str], str] = {}  # asked once per knowledge base and language
    stale: dict[str, list[_Entry]] = {}
    for entry in entries:
        where = (entry.knowledge_base_id, entry.language)
        if where not in chosen:
            chosen[where] = faq_embedder(knowledge_bases[entry.knowledge_base_id], entry.language)
        wanted = chosen[where]
        if wanted != entry.embedder or (wanted and not entry.has_vector):
            stale.setdefault(wanted, []).append(entry)
    for name, group in stale.items():
        vectors = entry_vectors(name, [e.question for e in group]) if name else [[]] * len(group)
        for entry, vector in zip(group, vectors, strict=True):
            # Only if the question is still the one embedded (not edited meanwhile).
            FaqEntry.objects.filter(pk=entry.pk, question=entry.question).update(
                embedder=name, embedding=vector
            )
            entry.embedder, entry.has_vector = name, bool(vector)


def faq_record_hit(*, entry: FaqEntry) -> None:
    # One UPDATE: concurrent hits all count.
    FaqEntry.objects.filter(pk=entry.pk).update(hits=F("hits") + 1, last_hit_at=timezone.now())


def faq_source(match: FaqMatch) -> dict:
    """The entry as a chat source, shaped like chat.services.source_dict's passages."""
    entry = match.entry
    chunk = entry.chunk
    text = _chunk_text(entry.question, entry.answer)
    return {
        "n": 1,
        "kind": ChunkKind.FAQ.value,
        "faq_id": entry.pk,
        "question": entry.question,
        "chunk_id": entry.chunk_id,
        "document_id": chunk.document_id if chunk is not None else None,
        "document": FAQ_DOCUMENT_NAME,
        "page": None,
        "heading": "",
        "sheet": None,
        "slide": None,
        "score": round(match.score, 4),
        "recall_score": round(match.score, 4),
        "text": text,
        "url": _faq_url(entry),
        "cited": True,
    }


def _faq_url(entry: FaqEntry) -> str:
    from django.urls import reverse

    if entry.chunk is not None:
        return (
            reverse("document_view", args=[entry.chunk.document_id])
            + f"?chunk={entry.chunk_id}#chunk-{entry.chunk_id}"
        )
    return reverse("kb_faqs", args=[entry.knowledge_base_id])
