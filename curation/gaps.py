"""Knowledge gaps: the questions a knowledge base did not answer well (abstained, marked 👎,
or weakly supported), grouped by meaning, and what its owners do about them.

A refresh files every not-yet-filed failing answer of the conversations over the knowledge
base (share-link visitors' included; an answer over several knowledge bases is filed by one
of them only, see `filed_under`) into the gap whose questions it is most similar to
on average, when that similarity reaches RAG_GAP_SIMILARITY, or into a new gap. The
clustering is online and the same code (`OnlineClusters`) runs in the benchmark (manage.py
bench_gaps), so its purity figures describe what owners see. An action (an FAQ answer, a
document, "out of scope") is followed by a recheck: the gap's questions asked again through
retrieval, read-only, and a count of the questions like it asked since, and how many of
those were answered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    Count,
    Exists,
    F,
    FloatField,
    Func,
    IntegerField,
    OuterRef,
    Q,
)
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from chat.models import Feedback, Message, Mode
from curation.models import Gap, GapQuestion, GapStatus
from retrieval.backends import embedder_available
from retrieval.fusion import detect_query_language

ANSWERED_MODES = (Mode.GENERATED, Mode.EXTRACTIVE, Mode.FAQ)
# Errors and stopped answers say nothing about the documents: never a gap.
FAILED_MODES = (Mode.ERROR, Mode.STOPPED)
logger = logging.getLogger(__name__)
LABEL_SAMPLE = 1000  # a huge gap's label is chosen among its most recent questions


# --- the clustering itself (no database) -------------------------------------------------


def _unit(vector) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64)
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


class OnlineClusters:
    """Online average-linkage clustering: each vector joins the cluster whose members it is
    most similar to on average (its dot product with their mean) if that reaches
    `threshold`, else starts its own. Online rather than global because questions arrive
    over weeks and a gap must keep its identity (and its owner's action) as more join it.
    Average similarity rather than the cosine with the (normalised) centroid: a broad gap's
    centroid grows generic and drew neighbouring needs in ("reset password", "change
    e-mail", "delete account" in one gap); bench_gaps: purity 0.83 -> 0.93 at about the
    same F (bench/gaps/README.md)."""

    def __init__(self, *, threshold: float) -> None:
        self.threshold = threshold
        self.means: list[np.ndarray] = []  # mean of the members' unit vectors
        self.sizes: list[int] = []

    def add_cluster(self, mean, size: int) -> int:
        self.means.append(np.asarray(mean, dtype=np.float64))
        self.sizes.append(max(int(size), 1))
        return len(self.means) - 1

    def nearest(self, vector) -> tuple[int, float]:
        """(index, mean similarity to its members) of the nearest cluster; (-1, -1.0) when
        there is none."""
        if not self.means:
            return -1, -1.0
        scores = np.vstack(self.means) @ _unit(vector)
        best = int(np.argmax(scores))
        return best, float(scores[best])

    def assign(self, vector) -> int:
        vector = _unit(vector)
        index, score = self.nearest(vector)
        if index < 0 or score < self.threshold:
            return self.add_cluster(vector, 1)
        n = self.sizes[index]
        self.means[index] = (self.means[index] * n + vector) / (n + 1)
        self.sizes[index] = n + 1
        return index


def cluster(vectors: Sequence, *, threshold: float) -> list[int]:
    """The cluster index of each vector, in order (what a refresh does to new questions)."""
    clusters = OnlineClusters(threshold=threshold)
    return [clusters.assign(v) for v in vectors]


def representative(texts: Sequence[str], vectors: Sequence, mean) -> str:
    """The text nearest the mean: the gap's label."""
    if not texts:
        return ""
    scores = np.vstack([_unit(v) for v in vectors]) @ _unit(mean)
    return texts[int(np.argmax(scores))]


# --- which answers failed -----------------------------------------------------------------


def gap_embedder(knowledge_base) -> str:
    """The first of RAG_GAP_EMBEDDERS the knowledge base has or that is one of
    RAG_QUESTION_EMBEDDERS (gaps embed questions only), else its first embedder."""
    names = list(knowledge_base.embedders or [])
    usable = [n for n in names if n in settings.RAG_EMBEDDERS]
    questions_only = [n for n in settings.RAG_QUESTION_EMBEDDERS if embedder_available(n)]
    for preferred in settings.RAG_GAP_EMBEDDERS:
        if preferred in usable or preferred in questions_only:
            return preferred
    return usable[0] if usable else settings.RAG_DEFAULT_EMBEDDERS[0]


def embed_questions(name: str, texts: Sequence[str]) -> np.ndarray:
    """Questions as queries (e5 "query: " clusters questions better than "passage: ": F
    0.79 against 0.70 in bench/gaps; MiniLM and USE make no difference)."""
    from retrieval.backends import get_embedder
    from retrieval.embedders import embed_queries

    return np.asarray(embed_queries(get_embedder(name), list(texts)), dtype=np.float64)


def answers_over(knowledge_base):
    """Assistant answers to questions asked over the knowledge base, by anyone (share-link
    visitors too)."""
    return (
        Message.objects.filter(
            role=Message.Role.ASSISTANT, conversation__knowledge_bases=knowledge_base
        )
        .exclude(question="")
        .exclude(mode__in=FAILED_MODES)
    )


# Which knowledge base files a failing answer (GapQuestion.message is one-to-one, so one
# does). Of the conversation's knowledge bases, the lowest id among those its sources came
# from: the knowledge base whose documents fell short. With no source (or none left), the
# conversation's lowest id. The rule depends on the answer alone, never on which knowledge
# base refreshes first, and every other knowledge base's refresh skips the answer.
_FILED_UNDER_SQL = """
COALESCE(
  (SELECT MIN(ckb.knowledgebase_id)
     FROM chat_conversation_knowledge_bases ckb
     JOIN ingestion_document d ON d.knowledge_base_id = ckb.knowledgebase_id
    WHERE ckb.conversation_id = chat_message.conversation_id
      AND d.id IN (
        SELECT (s ->> 'document_id')::bigint
          FROM jsonb_array_elements(
                 CASE WHEN jsonb_typeof(chat_message.sources) = 'array'
                      THEN chat_message.sources ELSE '[]'::jsonb END) s
         WHERE jsonb_typeof(s -> 'document_id') = 'number')),
  (SELECT MIN(ckb.knowledgebase_id)
     FROM chat_conversation_knowledge_bases ckb
    WHERE ckb.conversation_id = chat_message.conversation_id)
)
"""


def filed_under(answers):
    """`answers` (Messages) annotated with `filed_under`: the id of the knowledge base whose
    gaps take each one (_FILED_UNDER_SQL)."""
    return answers.annotate(
        filed_under=RawSQL(_FILED_UNDER_SQL, [], output_field=BigIntegerField())
    )


def _with_signals(answers):
    return answers.annotate(
        thumbs_down=Exists(Feedback.objects.filter(message=OuterRef("pk"), rating=-1)),
        unverified_n=Func(
            F("unverified"), function="jsonb_array_length", output_field=IntegerField()
        ),
        probability=Cast(KeyTextTransform("probability", "abstention"), FloatField()),
        abstain_threshold=Cast(KeyTextTransform("threshold", "abstention"), FloatField()),
    )


def failing(answers):
    """The answers that count as gaps: abstained, marked 👎, or answered with little
    support (the abstention probability just above its threshold, or several sentences
    the claim check could not support)."""
    weak = Q(mode__in=[Mode.GENERATED, Mode.EXTRACTIVE]) & (
        Q(probability__lt=F("abstain_threshold") + settings.RAG_GAP_WEAK_MARGIN)
        | Q(unverified_n__gte=settings.RAG_GAP_WEAK_UNVERIFIED)
    )
    return _with_signals(answers).filter(Q(mode=Mode.ABSTAINED) | Q(thumbs_down=True) | weak)


def reason_of(message) -> str:
    if message.mode == Mode.ABSTAINED:
        return GapQuestion.Reason.ABSTAINED
    if getattr(message, "thumbs_down", False):
        return GapQuestion.Reason.THUMBS_DOWN
    return GapQuestion.Reason.WEAK


def _text(message) -> str:
    # The standalone form: "and on Windows?" means nothing alone.
    return (message.standalone_question or message.question).strip()


# --- refresh --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshResult:
    filed: int
    new_gaps: int


def _lock(knowledge_base) -> None:
    # One refresh per knowledge base at a time (page views, API calls and the task race).
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"gaps:{knowledge_base.pk}"])


def gaps_refresh(*, knowledge_base, batch: int | None = None) -> RefreshResult:
    """File the knowledge base's failing answers not yet in a gap, oldest first, then count
    the questions asked since each action."""
    if batch is None:
        batch = settings.RAG_GAP_REFRESH_BATCH
    with transaction.atomic():
        _lock(knowledge_base)
        unfiled = answers_over(knowledge_base).filter(gap_question__isnull=True)
        messages = list(
            failing(filed_under(unfiled).filter(filed_under=knowledge_base.pk)).order_by(
                "created_at", "id"
            )[:batch]
        )
        result = _file(knowledge_base, messages) if messages else RefreshResult(0, 0)
        _count_later(knowledge_base)
    return result


def gaps_refresh_quietly(*, knowledge_base) -> bool:
    """The refresh a page view or API call runs first: when it fails (a model that will not
    load), the gaps filed so far are still listed; the error goes to the log."""
    try:
        gaps_refresh(knowledge_base=knowledge_base)
    except Exception:  # noqa: BLE001 - listing must not depend on it
        logger.exception("refreshing the gaps of knowledge base %s failed", knowledge_base.pk)
        return False
    return True


def _file(knowledge_base, messages: list) -> RefreshResult:
    name = gap_embedder(knowledge_base)
    texts = [_text(m) for m in messages]
    vectors = embed_questions(name, texts)
    gaps = list(
        Gap.objects.filter(knowledge_base=knowledge_base, embedder=name)
        .annotate(n=Count("questions"))
        .order_by("id")
    )
    clusters = OnlineClusters(threshold=settings.RAG_GAP_SIMILARITY)
    for gap in gaps:
        clusters.add_cluster(gap.centroid, gap.n)
    touched: set[int] = set()
    new_gaps = 0
    for message, text, vector in zip(messages, texts, vectors, strict=True):
        index = clusters.assign(vector)
        if index == len(gaps):
            gaps.append(
                Gap.objects.create(
                    knowledge_base=knowledge_base,
                    label=text,
                    language=detect_query_language(text) or "en",
                    embedder=name,
                    centroid=_rounded(vector),
                    first_seen=message.created_at,
                    last_seen=message.created_at,
                )
            )
            new_gaps += 1
        gap = gaps[index]
        GapQuestion.objects.create(
            gap=gap,
            message=message,
            question=text,
            reason=reason_of(message),
            embedding=_rounded(vector),
            asked_at=message.created_at,
        )
        gap.first_seen = min(gap.first_seen, message.created_at)
        gap.last_seen = max(gap.last_seen, message.created_at)
        touched.add(index)
    for index in touched:
        gap = gaps[index]
        gap.centroid = _rounded(clusters.means[index])
        rows = list(gap.questions.order_by("-asked_at").values_list("question", "embedding"))
        rows = [r for r in rows[:LABEL_SAMPLE] if r[1]]
        if rows:
            gap.label = representative([r[0] for r in rows], [r[1] for r in rows], gap.centroid)
            gap.language = detect_query_language(gap.label) or "en"
        gap.save(update_fields=["centroid", "label", "language", "first_seen", "last_seen"])
    return RefreshResult(len(messages), new_gaps)


def _rounded(vector) -> list[float]:
    return [round(float(x), 6) for x in vector]


def _count_later(knowledge_base) -> None:
    """For each gap acted on: the questions like it (nearest gap, above the threshold)
    asked after the action, and how many of them were answered. Incremental: each gap keeps
    the time up to which it has counted."""
    acted = [g for g in Gap.objects.filter(knowledge_base=knowledge_base) if g.action_at]
    if not acted:
        return
    name = gap_embedder(knowledge_base)
    all_gaps = list(Gap.objects.filter(knowledge_base=knowledge_base, embedder=name))
    acted = [g for g in acted if g.embedder == name]
    if not acted:
        return

    def since(gap) -> timezone.datetime:
        until = parse_datetime((gap.recheck or {}).get("later", {}).get("until") or "")
        return max(gap.action_at, until) if until else gap.action_at

    start = min(since(g) for g in acted)
    messages = list(
        answers_over(knowledge_base)
        .filter(created_at__gt=start)
        .order_by("created_at", "id")[: settings.RAG_GAP_REFRESH_BATCH]
    )
    if not messages:
        return
    failed = set(
        failing(answers_over(knowledge_base).filter(pk__in=[m.pk for m in messages])).values_list(
            "pk", flat=True
        )
    )
    vectors = embed_questions(name, [_text(m) for m in messages])
    clusters = OnlineClusters(threshold=settings.RAG_GAP_SIMILARITY)
    for gap in all_gaps:
        clusters.add_cluster(gap.centroid, 1)
    by_id = {g.pk: g for g in acted}
    counts = {g.pk: dict((g.recheck or {}).get("later") or {}) for g in acted}
    for message, vector in zip(messages, vectors, strict=True):
        index, score = clusters.nearest(vector)
        if index < 0 or score < clusters.threshold:
            continue
        gap = by_id.get(all_gaps[index].pk)
        if gap is None or message.created_at <= since(gap):
            continue
        later = counts[gap.pk]
        later["asked"] = later.get("asked", 0) + 1
        answered = message.pk not in failed and message.mode in ANSWERED_MODES
        later["answered"] = later.get("answered", 0) + int(answered)
    last = messages[-1].created_at.isoformat()
    for gap in acted:
        later = counts[gap.pk]
        later.setdefault("asked", 0)
        later.setdefault("answered", 0)
        later["until"] = last
        gap.recheck = {**(gap.recheck or {}), "later": later}
        gap.save(update_fields=["recheck"])


# --- reads -----------------------------------------------------------------------------------


def gaps_for(*, knowledge_base, status: str | None = None):
    qs = Gap.objects.filter(knowledge_base=knowledge_base).annotate(count=Count("questions"))
    if status:
        qs = qs.filter(status=status)
    return qs.order_by("-count", "-last_seen", "-id")


# --- actions ---------------------------------------------------------------------------------


def _acted(gap: Gap, *, status: str, user) -> None:
    gap.status = status
    gap.action_by = user if getattr(user, "is_authenticated", False) else None
    gap.action_at = timezone.now()
    # Later questions count from the new action on.
    gap.recheck = {}


def gap_answer(*, gap: Gap, answer: str, user, question: str | None = None):
    """The owner's answer becomes an FAQ entry for the gap's representative question."""
    from curation.faq import faq_add

    entry = faq_add(
        knowledge_base=gap.knowledge_base,
        question=(question or gap.label).strip(),
        answer=answer.strip(),
        user=user,
    )
    _acted(gap, status=GapStatus.ANSWERED, user=user)
    gap.faq_entry = entry
    gap.save(update_fields=["status", "action_by", "action_at", "recheck", "faq_entry"])
    return entry


def gap_document_added(*, gap: Gap, document, user) -> None:
    _acted(gap, status=GapStatus.DOCUMENT_ADDED, user=user)
    gap.document = document
    gap.save(update_fields=["status", "action_by", "action_at", "recheck", "document"])


def gap_mark_out_of_scope(*, gap: Gap, user) -> None:
    _acted(gap, status=GapStatus.OUT_OF_SCOPE, user=user)
    gap.save(update_fields=["status", "action_by", "action_at", "recheck"])


def gap_reopen(*, gap: Gap, user) -> None:
    gap.status = GapStatus.OPEN
    gap.action_by = user if getattr(user, "is_authenticated", False) else None
    gap.action_at = None
    gap.recheck = {}
    gap.save(update_fields=["status", "action_by", "action_at", "recheck"])


def recheck_ready(gap: Gap) -> bool:
    """A document must be ingested before asking again can tell anything."""
    from ingestion.models import DocumentStatus

    if gap.status != GapStatus.DOCUMENT_ADDED or gap.document is None:
        return True
    return gap.document.status in (DocumentStatus.READY, DocumentStatus.FAILED)


def question_answered(*, knowledge_base, question: str) -> tuple[bool, float]:
    """Would the chat answer this now? Retrieval and the abstention decision only: nothing
    is generated and no conversation is stored."""
    from chat.abstention import assess
    from retrieval.services import search

    faq = _faq_match(knowledge_base=knowledge_base, question=question)
    if faq:
        return True, 1.0
    result = search(knowledge_bases=[knowledge_base], query=question)
    assessment = assess(
        question,
        result.results,
        knowledge_bases=[knowledge_base],
        reranker=result.reranker,
        scope=result.scope,
    )
    return bool(result.results) and assessment.answerable, assessment.probability


def _faq_match(*, knowledge_base, question: str) -> bool:
    """The chat's direct FAQ match (an owner's answer, possibly written from this gap)."""
    from curation.faq import faq_match

    return faq_match(knowledge_bases=[knowledge_base], question=question) is not None


def gap_recheck(*, gap: Gap) -> dict:
    """Ask the gap's (distinct, most recent) questions again and store how many are answered
    now: {"asked", "answered", "at", "questions": [{"question", "answered", "probability"}]}."""
    seen: dict[str, None] = {}
    for text in gap.questions.order_by("-asked_at").values_list("question", flat=True):
        seen.setdefault(text, None)
        if len(seen) >= settings.RAG_GAP_RECHECK_QUESTIONS:
            break
    rows = []
    for text in seen:
        answered, probability = question_answered(knowledge_base=gap.knowledge_base, question=text)
        rows.append({"question": text, "answered": answered, "probability": round(probability, 4)})
    fresh = Gap.objects.get(pk=gap.pk)  # the refresh may have counted later questions meanwhile
    fresh.recheck = {
        **(fresh.recheck or {}),
        "asked": len(rows),
        "answered": sum(r["answered"] for r in rows),
        "at": timezone.now().isoformat(),
        "questions": rows,
    }
    fresh.save(update_fields=["recheck"])
    gap.recheck = fresh.recheck
    return fresh.recheck


def recheck_pending(gap: Gap) -> bool:
    if not gap.action_at:
        return False
    at = parse_datetime((gap.recheck or {}).get("at") or "")
    return at is None or at < gap.action_at
