"""Saved test cases (hit-testing queries with the passages the owner marked correct) and the
knowledge base's regression suite: those cases plus its QA pairs, run through the one ranking
that hit testing, search and chat share (retrieval.services.search), scored with nDCG@10 and
recall@10 and compared with the previous run."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from curation.models import RegressionRun, SavedCase
from ingestion.models import Chunk, KnowledgeBase
from retrieval.evaluation import dedupe_documents, ndcg_at, recall_at

K = 10  # nDCG@10 and recall@10: the depth the chat and the dashboard look at
# Scored candidates kept per case for the threshold sweep (curation.thresholds).
SCORED_KEPT = 50
# Runs kept per knowledge base (each holds every query's ranking); older ones are deleted.
RUNS_KEPT = 100
# A run changes a case "for the worse" when its nDCG@10 or recall@10 drops by more than this
# (rounding noise of tied scores is not a regression).
WORSE_EPSILON = 1e-3


class CaseError(ValueError):
    """A case that cannot be saved (no query, no passage of this knowledge base)."""


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip().lower()


def same_passage(entry: dict, chunk_id: int, document_id: int, text: str) -> bool:
    """Whether a ranked chunk is the passage a case marked: the same chunk, or (after a
    re-ingestion gave the chunks new ids) the same document with the same or nearly the same
    text (RAG_REGRESSION_TEXT_MATCH: difflib's ratio of the whitespace-normalised texts)."""
    if entry.get("chunk_id") == chunk_id:
        return True
    if entry.get("document_id") != document_id:
        return False
    a, b = _normalise(entry.get("text", "")), _normalise(text)
    if a == b:
        return True
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    threshold = settings.RAG_REGRESSION_TEXT_MATCH
    return matcher.real_quick_ratio() >= threshold and matcher.ratio() >= threshold


def case_save(*, knowledge_base: KnowledgeBase, query: str, chunk_ids: Iterable, user) -> SavedCase:
    """Save a query with the passages (chunks of this knowledge base) marked correct."""
    query = (query or "").strip()
    if not query:
        raise CaseError(_("A test case needs a query."))
    ids = []
    for raw in chunk_ids:
        try:
            ids.append(int(raw))
        except (TypeError, ValueError):
            continue
    chunks = {
        c.pk: c
        for c in Chunk.objects.filter(knowledge_base=knowledge_base, pk__in=ids, is_parent=False)
    }
    ordered = [chunks[i] for i in dict.fromkeys(ids) if i in chunks]
    if not ordered:
        raise CaseError(_("Mark at least one passage of this knowledge base as correct."))
    relevant = [
        {"chunk_id": c.pk, "document_id": c.document_id, "text": c.text, "page": c.page}
        for c in ordered
    ]
    return SavedCase.objects.create(
        knowledge_base=knowledge_base, query=query[:4000], relevant=relevant, created_by=user
    )


def case_delete(*, case: SavedCase) -> None:
    case.delete()


@dataclass(frozen=True)
class Scored:
    """One query of the suite after a run."""

    key: str  # "case:<id>" or "qa:<id>": how runs are compared
    kind: str
    query: str
    ndcg: float
    recall: float
    ranking: list[dict]  # the first K passages of the answer order, marked relevant or not
    scored: list[list]  # [rerank score, relevant unit or None] of the reranked candidates
    units: int  # relevant passages (cases) or documents (QA pairs) to find
    answer_p: float | None  # the abstention model's probability that the query is answered

    def as_dict(self) -> dict:
        return {
            "key": self.key,
            "kind": self.kind,
            "query": self.query,
            "ndcg@10": round(self.ndcg, 4),
            "recall@10": round(self.recall, 4),
            "ranking": self.ranking,
            "scored": self.scored,
            "units": self.units,
            "answer_p": self.answer_p,
        }


def _answer_probability(knowledge_base, query: str, result) -> float:
    """The calibrated probability chat.abstention gives this query's answer (the same
    computation as the chat's), for the abstention threshold proposal."""
    from chat.abstention import probability_of

    p, _, _ = probability_of(
        query, result.results, knowledge_bases=[knowledge_base], reranker=result.reranker
    )
    return round(float(p), 4)


def _score_case(knowledge_base, case: SavedCase) -> Scored:
    from retrieval.services import search

    result = search(knowledge_bases=[knowledge_base], query=case.query)
    entries = list(case.relevant or [])

    def unit(c) -> str | None:
        for i, entry in enumerate(entries):
            if same_passage(entry, c.chunk_id, c.document_id, c.text):
                return f"e{i}"
        return None

    units = {c.chunk_id: unit(c) for c in result.reranked}
    # A passage counts once: a second chunk matching the same marked passage is not relevant.
    ranked, seen = [], set()
    for c in result.results:
        u = units.get(c.chunk_id)
        ranked.append(u if u and u not in seen else f"c{c.chunk_id}")
        if u:
            seen.add(u)
    relevant = {f"e{i}": 1 for i in range(len(entries))}
    return Scored(
        key=f"case:{case.pk}",
        kind="case",
        query=case.query,
        ndcg=ndcg_at(ranked, relevant, K),
        recall=recall_at(ranked, relevant, K),
        ranking=_ranking(result.results, lambda c: units.get(c.chunk_id) is not None),
        scored=[[round(c.score, 5), units.get(c.chunk_id)] for c in result.reranked[:SCORED_KEPT]],
        units=len(entries),
        answer_p=_answer_probability(knowledge_base, case.query, result),
    )


def _score_qa_pair(knowledge_base, pair) -> Scored:
    """A QA pair is judged by document, as retrieval.qa_eval does (the ranking deduplicated
    to documents)."""
    from retrieval.services import search

    result = search(knowledge_bases=[knowledge_base], query=pair.question)
    relevant = {str(pair.document_id): 1}
    ranked = dedupe_documents(str(c.document_id) for c in result.results)
    doc = pair.document_id
    return Scored(
        key=f"qa:{pair.pk}",
        kind="qa",
        query=pair.question,
        ndcg=ndcg_at(ranked, relevant, K),
        recall=recall_at(ranked, relevant, K),
        ranking=_ranking(result.results, lambda c: c.document_id == doc),
        scored=[
            [round(c.score, 5), "d" if c.document_id == doc else None]
            for c in result.reranked[:SCORED_KEPT]
        ],
        units=1,
        answer_p=_answer_probability(knowledge_base, pair.question, result),
    )


def _ranking(candidates: Sequence, is_relevant) -> list[dict]:
    return [
        {
            "chunk_id": c.chunk_id,
            "document": c.document_name,
            "page": c.page,
            "text": c.text[:200],
            "score": round(c.score, 4),
            "relevant": bool(is_relevant(c)),
        }
        for c in candidates[:K]
    ]


def suite_size(knowledge_base: KnowledgeBase) -> int:
    """Saved cases plus QA pairs whose document exists: the queries a run asks."""
    return (
        knowledge_base.saved_cases.count()
        + knowledge_base.qa_pairs.filter(document__isnull=False).count()
    )


def _mean(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def worse_cases(previous: dict[str, dict], current: Sequence[dict]) -> list[dict]:
    """Queries whose nDCG@10 or recall@10 dropped since the previous run, worst first, with
    both rankings."""
    worse = []
    for row in current:
        before = previous.get(row["key"])
        if before is None:
            continue
        d_ndcg = row["ndcg@10"] - before["ndcg@10"]
        d_recall = row["recall@10"] - before["recall@10"]
        if d_ndcg < -WORSE_EPSILON or d_recall < -WORSE_EPSILON:
            worse.append(
                {
                    "key": row["key"],
                    "kind": row["kind"],
                    "query": row["query"],
                    "before": {k: before[k] for k in ("ndcg@10", "recall@10", "ranking")},
                    "after": {k: row[k] for k in ("ndcg@10", "recall@10", "ranking")},
                    "delta": round(d_ndcg, 4),
                }
            )
    worse.sort(key=lambda w: (w["delta"], w["after"]["recall@10"] - w["before"]["recall@10"]))
    return worse


def regression_run(
    *, knowledge_base: KnowledgeBase, trigger: str, run: RegressionRun | None = None
) -> RegressionRun:
    """Run the suite now (into `run` when a queued one is given), store per-query metrics,
    their means, and the queries that got worse since the previous finished run."""
    if run is None:
        run = RegressionRun.objects.create(knowledge_base=knowledge_base, trigger=trigger)
    run.status = RegressionRun.Status.RUNNING
    run.save(update_fields=["status"])
    try:
        rows = [_score_case(knowledge_base, c).as_dict() for c in knowledge_base.saved_cases.all()]
        pairs = knowledge_base.qa_pairs.filter(document__isnull=False)
        rows += [_score_qa_pair(knowledge_base, p).as_dict() for p in pairs]
    except Exception as exc:
        run.status = RegressionRun.Status.FAILED
        run.error = f"{type(exc).__name__}: {exc}"[:2000]
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "error", "finished_at"])
        raise
    previous = (
        RegressionRun.objects.filter(
            knowledge_base=knowledge_base, status=RegressionRun.Status.DONE
        )
        .exclude(pk=run.pk)
        .order_by("-finished_at", "-id")
        .first()
    )
    before = {r["key"]: r for r in (previous.results if previous else [])}
    worse = worse_cases(before, rows)
    run.results = rows
    run.metrics = {
        "ndcg@10": _mean([r["ndcg@10"] for r in rows]),
        "recall@10": _mean([r["recall@10"] for r in rows]),
        "cases": sum(r["kind"] == "case" for r in rows),
        "qa_pairs": sum(r["kind"] == "qa" for r in rows),
        "previous": previous.pk if previous else None,
        "worse": worse,
    }
    run.status = RegressionRun.Status.DONE
    run.finished_at = timezone.now()
    run.save(update_fields=["results", "metrics", "status", "finished_at"])
    old = RegressionRun.objects.filter(knowledge_base=knowledge_base).values_list("pk", flat=True)
    RegressionRun.objects.filter(pk__in=list(old[RUNS_KEPT:])).delete()
    return run


# Knowledge-base fields whose change can move the ranking (a rename cannot).
RETRIEVAL_FIELDS = frozenset(
    {
        "embedders",
        "recall_k",
        "reranker",
        "rerank_top_k",
        "rerank_min_score",
        "rerank_max_drop",
        "chunk_tokens",
        "chunk_overlap_tokens",
        "parent_chunk_tokens",
    }
)


def regression_enqueue(
    *, knowledge_base: KnowledgeBase, trigger: str, changed: Iterable[str] | None = None
) -> RegressionRun | None:
    """Queue a run unless one is already queued for this knowledge base (so a batch of 100
    uploads gives one run, not 100), the suite is empty, or `changed` (settings that were
    saved) names nothing that moves the ranking. The task is sent after the commit."""
    from curation.tasks import run_regression

    if changed is not None and not (set(changed) & RETRIEVAL_FIELDS):
        return None
    if not suite_size(knowledge_base):
        return None
    with transaction.atomic():
        # The knowledge base's row serialises concurrent enqueues (two workers finishing
        # documents at once): the second sees the first one's queued run.
        KnowledgeBase.objects.select_for_update().filter(pk=knowledge_base.pk).first()
        queued = RegressionRun.objects.filter(
            knowledge_base=knowledge_base, status=RegressionRun.Status.QUEUED
        )
        # A queued run whose message was lost (broker flushed, worker killed) must not
        # block the suite for ever.
        stale = timezone.now() - timedelta(seconds=settings.RAG_REGRESSION_STALE_SECONDS)
        queued.filter(created_at__lt=stale).update(
            status=RegressionRun.Status.FAILED,
            error="never started (the queued task was lost)",
            finished_at=timezone.now(),
        )
        if queued.exists():
            return None
        run = RegressionRun.objects.create(knowledge_base=knowledge_base, trigger=trigger)
        # On demand: at once; after a change: once the rest of its batch is done.
        manual = trigger == RegressionRun.Trigger.MANUAL
        countdown = 0 if manual else settings.RAG_REGRESSION_DELAY_SECONDS
        transaction.on_commit(lambda: run_regression.apply_async((run.pk,), countdown=countdown))
    return run


def regression_after_ingest(*, document_id: int) -> RegressionRun | None:
    """The hook of ingestion.tasks: a document of the knowledge base became ready."""
    from curation.tasks import enqueue_regression

    kb = KnowledgeBase.objects.filter(documents__pk=document_id).first()
    if kb is None:
        return None
    return enqueue_regression(knowledge_base=kb, trigger=RegressionRun.Trigger.INGESTION)
