"""Thresholds calibrated from the owner's own cases: the rerank cut-off
(KnowledgeBase.rerank_min_score) and the abstention threshold (abstain_threshold), proposed
from the latest regression run (curation.cases), with the trade-off behind each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from curation.models import RegressionRun
from ingestion.models import KnowledgeBase

# Cut-offs tried in the sweep at most (quantiles of the observed scores): enough for the
# chart and for a value between two neighbouring scores, without a pass per distinct score.
MAX_SWEEP = 200
APPLICABLE = ("rerank_min_score", "abstain_threshold")


@dataclass(frozen=True)
class Point:
    threshold: float
    precision: float | None  # None where nothing would be kept
    recall: float


@dataclass(frozen=True)
class Proposal:
    run_id: int | None
    queries: int
    reranker: str
    top_k: int
    rerank_points: list[Point] = field(default_factory=list)
    rerank_min_score: float | None = None  # proposed; None: no proposal
    recall_without_cutoff: float = 0.0
    abstain_points: list[Point] = field(default_factory=list)  # precision unknown: None
    abstain_threshold: float | None = None
    abstain_queries: int = 0
    current: dict = field(default_factory=dict)

    def proposed(self) -> dict[str, float]:
        values = {"rerank_min_score": self.rerank_min_score}
        values["abstain_threshold"] = self.abstain_threshold
        return {k: v for k, v in values.items() if v is not None}


def latest_run(knowledge_base: KnowledgeBase) -> RegressionRun | None:
    return (
        RegressionRun.objects.filter(
            knowledge_base=knowledge_base, status=RegressionRun.Status.DONE
        )
        .order_by("-finished_at", "-id")
        .first()
    )


def _sweep_values(scores: Sequence[float]) -> list[float]:
    values = sorted(set(scores))
    if len(values) > MAX_SWEEP:
        step = (len(values) - 1) / (MAX_SWEEP - 1)
        values = sorted({values[round(i * step)] for i in range(MAX_SWEEP)})
    return values


def cutoff_point(rows: Sequence[dict], threshold: float | None, top_k: int) -> Point:
    """Precision (share of kept passages that are relevant, over all queries) and recall
    (mean share of each query's relevant passages kept) with this min score, as
    retrieval.cutoffs.apply_cutoffs keeps them: the first top_k, down to the first below."""
    kept_total = kept_relevant = 0
    recalls = []
    for row in rows:
        found = set()
        for score, unit in row["scored"][:top_k]:
            if threshold is not None and score < threshold:
                break
            kept_total += 1
            if unit is not None:
                kept_relevant += 1
                found.add(unit)
        recalls.append(len(found) / max(row["units"], 1))
    precision = kept_relevant / kept_total if kept_total else None
    return Point(
        threshold=round(threshold, 5) if threshold is not None else float("-inf"),
        precision=round(precision, 4) if precision is not None else None,
        recall=round(sum(recalls) / len(recalls), 4) if recalls else 0.0,
    )


def propose_min_score(
    rows: Sequence[dict], *, top_k: int, keep_recall: float
) -> tuple[list[Point], float | None, float]:
    """The sweep and the highest min score whose recall stays at `keep_recall` of the recall
    with no min score (the cut-off then drops only passages the cases call irrelevant, as far
    as the cases can tell). Returns (points, proposal or None, recall without a cut-off)."""
    base = cutoff_point(rows, None, top_k).recall
    scores = [score for row in rows for score, _ in row["scored"][:top_k]]
    points = [cutoff_point(rows, t, top_k) for t in _sweep_values(scores)]
    if base <= 0:
        return points, None, base
    passing = [i for i, p in enumerate(points) if p.recall >= base * keep_recall]
    if not passing:
        return points, None, base
    # Half-way down to the next lower score: the same passages pass, and a relevant passage
    # of a new query that scores a little lower than the cases' is not cut off at once.
    i = max(passing)
    lower = points[i - 1].threshold if i > 0 else points[i].threshold
    return points, round((points[i].threshold + lower) / 2, 4), base


def propose_abstain(probabilities: Sequence[float]) -> tuple[list[Point], float | None]:
    """The owner's cases and QA pairs are all answerable: as chat.abstention's calibration
    does, the threshold keeps CALIBRATION_ANSWERED of them answered (from MIN_PAIRS on).
    Points: the share answered at thresholds 0, 0.05, ..., 1."""
    from chat.abstention import CALIBRATION_ANSWERED, MIN_PAIRS

    values = sorted(probabilities)
    points = [
        Point(
            threshold=t / 20,
            precision=None,
            recall=round(sum(p >= t / 20 for p in values) / len(values), 4) if values else 0.0,
        )
        for t in range(21)
    ]
    if len(values) < MIN_PAIRS:
        return points, None
    return points, round(values[int((1 - CALIBRATION_ANSWERED) * len(values))], 4)


def thresholds_propose(
    *, knowledge_base: KnowledgeBase, run: RegressionRun | None = None
) -> Proposal:
    """The proposal from the latest finished regression run (or `run`)."""
    from retrieval.services import settings_for

    if run is None:
        run = latest_run(knowledge_base)
    retrieval = settings_for([knowledge_base])
    current = {
        "rerank_min_score": knowledge_base.rerank_min_score,
        "abstain_threshold": knowledge_base.abstain_threshold,
        "abstain_calibrated": knowledge_base.abstain_calibrated,
    }
    top_k = retrieval.cutoffs.top_k
    if run is None or not run.results:
        return Proposal(
            run_id=run.pk if run else None,
            queries=0,
            reranker=retrieval.reranker,
            top_k=top_k,
            current=current,
        )
    from chat.abstention import MIN_PAIRS

    rows = [r for r in run.results if "scored" in r]
    points, min_score, base = propose_min_score(
        rows, top_k=top_k, keep_recall=settings.RAG_THRESHOLD_KEEP_RECALL
    )
    if len(rows) < MIN_PAIRS:  # a cut-off fitted to a handful of queries would overfit them
        min_score = None
    probabilities = [r["answer_p"] for r in rows if r.get("answer_p") is not None]
    abstain_points, abstain = propose_abstain(probabilities)
    return Proposal(
        run_id=run.pk,
        queries=len(rows),
        reranker=retrieval.reranker,
        top_k=top_k,
        rerank_points=points,
        rerank_min_score=min_score,
        recall_without_cutoff=base,
        abstain_points=abstain_points,
        abstain_threshold=abstain,
        abstain_queries=len(probabilities),
        current=current,
    )


class StaleProposal(ValueError):
    """The proposal confirmed is not the one the latest run gives now."""


def thresholds_apply(
    *, knowledge_base: KnowledgeBase, run_id: int | None, fields: Sequence[str]
) -> dict[str, list]:
    """Set the proposed values the owner confirmed (`fields`, from APPLICABLE), recomputed
    from run `run_id`, which must still be the latest finished run (else StaleProposal: the
    owner confirmed numbers they no longer see). Returns {field: [old, new]} of what changed."""
    proposal = thresholds_propose(knowledge_base=knowledge_base)
    if proposal.run_id is None or proposal.run_id != run_id:
        raise StaleProposal("A newer regression run changed the proposal; review it again.")
    values = {f: v for f, v in proposal.proposed().items() if f in fields}
    with transaction.atomic():
        kb = KnowledgeBase.objects.select_for_update().get(pk=knowledge_base.pk)
        changes = {f: [getattr(kb, f), v] for f, v in values.items() if getattr(kb, f) != v}
        for f, (_, new) in changes.items():
            setattr(kb, f, new)
        if changes:
            kb.save(update_fields=[*changes, "updated_at"])
    for f, (_, new) in changes.items():
        setattr(knowledge_base, f, new)
    return changes
