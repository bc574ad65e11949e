"""Pages of this part of curation (their URL patterns are at the bottom): a knowledge base's
saved test cases, its regression runs (nDCG@10 and recall@10 over time, the cases that got
worse) and the thresholds proposed from them. Owners only; the work is curation.cases and
curation.thresholds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from curation.cases import CaseError, case_delete, case_save, regression_enqueue, suite_size
from curation.models import RegressionRun
from curation.tasks import enqueue_regression
from curation.thresholds import APPLICABLE, StaleProposal, thresholds_apply, thresholds_propose
from ingestion.selectors import knowledge_base_get
from ragapp.audit import audit_settings

RUNS_CHARTED = 30
CHART_W, CHART_H, PAD = 600, 160, 20


def polyline(
    ys: Sequence[float | None], xs: Sequence[float] | None = None, *, x_lo=None, x_hi=None
) -> str:
    """SVG polyline points of (x, y) on a CHART_W x CHART_H chart, y from 0 to 1; without
    `xs` the values are evenly spaced (runs in order). None values are skipped."""
    if xs is None:
        xs = list(range(len(ys)))
    x_lo = min(xs, default=0) if x_lo is None else x_lo
    x_hi = max(xs, default=1) if x_hi is None else x_hi
    out = []
    for x, y in zip(xs, ys, strict=True):
        if y is None or not math.isfinite(y) or not math.isfinite(x):
            continue
        height = min(max(y, 0.0), 1.0) * (CHART_H - 2 * PAD)
        out.append(f"{_x(x, x_lo, x_hi):.1f},{CHART_H - PAD - height:.1f}")
    return " ".join(out)


def dots(points: str) -> list[dict]:
    """The polyline's points as circles (a single run draws no line)."""
    return [dict(zip(("x", "y"), p.split(","), strict=True)) for p in points.split()]


def _x(x: float, lo: float, hi: float) -> float:
    """The chart's x for a value between lo and hi (the middle when they are equal)."""
    if hi <= lo:
        return round(CHART_W / 2, 1)
    return round(PAD + (x - lo) / (hi - lo) * (CHART_W - 2 * PAD), 1)


def _metrics(row: dict) -> dict:
    return {
        "ndcg": row.get("ndcg@10"),
        "recall": row.get("recall@10"),
        "ranking": row.get("ranking", []),
    }


def regression_overview(*, knowledge_base) -> dict:
    """What templates/curation/_regression_chart.html draws (the Test cases page and the
    dashboard): the last RUNS_CHARTED runs, nDCG@10 and recall@10 of the finished ones as
    polylines, the latest finished run and its cases that got worse, before and after."""
    runs = list(RegressionRun.objects.filter(knowledge_base=knowledge_base)[:RUNS_CHARTED])
    for run in runs:  # "@" cannot appear in a template variable
        run.ndcg = (run.metrics or {}).get("ndcg@10")
        run.recall = (run.metrics or {}).get("recall@10")
        run.worse_count = len((run.metrics or {}).get("worse", []))
    done = [r for r in reversed(runs) if r.status == RegressionRun.Status.DONE]
    latest = done[-1] if done else None
    chart = {
        "ndcg": polyline([r.ndcg for r in done]),
        "recall": polyline([r.recall for r in done]),
        "ticks": [
            {"x": _x(i, 0, len(done) - 1), "label": f"#{r.pk}"}
            for i, r in enumerate(done)
            if i == 0 or i == len(done) - 1 or i % 5 == 0
        ],
        "runs": len(done),
    }
    chart["ndcg_dots"] = dots(chart["ndcg"])
    chart["recall_dots"] = dots(chart["recall"])
    return {
        "runs": runs,
        "pending": any(
            r.status in (RegressionRun.Status.QUEUED, RegressionRun.Status.RUNNING) for r in runs
        ),
        "latest": latest,
        "worse": [
            {**w, "before": _metrics(w["before"]), "after": _metrics(w["after"])}
            for w in ((latest.metrics or {}).get("worse", []) if latest else [])
        ],
        "chart": chart,
    }


@login_required
@require_GET
def kb_cases(request, pk: int):
    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    overview = regression_overview(knowledge_base=kb)
    latest = overview["latest"]
    by_key = {r["key"]: r for r in (latest.results if latest else [])}
    cases = list(kb.saved_cases.all())
    for case in cases:
        row = by_key.get(f"case:{case.pk}")
        case.latest = _metrics(row) if row else None
    context = {
        "kb": kb,
        "is_owner": True,
        "cases": cases,
        "qa_pairs": kb.qa_pairs.filter(document__isnull=False).count(),
        "suite_size": suite_size(kb),
        **overview,
    }
    return render(request, "curation/cases.html", context)


@login_required
@require_POST
def kb_case_save(request, pk: int):
    """Hit testing's "Save as test case": the query and the passages ticked as correct."""
    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    query = (request.POST.get("q") or "").strip()
    try:
        case_save(
            knowledge_base=kb,
            query=query,
            chunk_ids=request.POST.getlist("chunk"),
            user=request.user,
        )
    except CaseError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Saved as a test case."))
    return redirect(f"{reverse('hit_test', args=[kb.pk])}?{urlencode({'q': query})}")


@login_required
@require_POST
def kb_case_delete(request, pk: int, case_id: int):
    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    case_delete(case=get_object_or_404(kb.saved_cases, pk=case_id))
    messages.success(request, _("Test case deleted."))
    return redirect("kb_cases", pk=kb.pk)


@login_required
@require_POST
def kb_cases_run(request, pk: int):
    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    if not suite_size(kb):
        messages.error(request, _("Save a test case or upload QA pairs first."))
    elif regression_enqueue(knowledge_base=kb, trigger=RegressionRun.Trigger.MANUAL):
        messages.success(request, _("Regression run queued. Reload this page to see it."))
    else:
        messages.info(request, _("A regression run is already queued."))
    return redirect("kb_cases", pk=kb.pk)


@login_required
@require_http_methods(["GET", "POST"])
def kb_case_thresholds(request, pk: int):
    """The proposed rerank cut-off and abstention threshold with their trade-offs; a POST
    (the owner's confirmation) applies the ticked ones."""
    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    if request.method == "POST":
        fields = [f for f in request.POST.getlist("field") if f in APPLICABLE]
        try:
            run_id = int(request.POST.get("run") or 0)
            changes = thresholds_apply(knowledge_base=kb, run_id=run_id, fields=fields)
        except (ValueError, StaleProposal):
            messages.error(
                request, _("A newer regression run changed the proposal; review it again.")
            )
            return redirect("kb_case_thresholds", pk=kb.pk)
        audit_settings(request=request, knowledge_base=kb, changes=changes)
        enqueue_regression(
            knowledge_base=kb, trigger=RegressionRun.Trigger.SETTINGS, changed=changes
        )
        messages.success(request, _("Thresholds applied.") if changes else _("Nothing changed."))
        return redirect("kb_case_thresholds", pk=kb.pk)
    proposal = thresholds_propose(knowledge_base=kb)
    points = [p for p in proposal.rerank_points if math.isfinite(p.threshold)]
    xs = [p.threshold for p in points]
    lo, hi = min(xs, default=0.0), max(xs, default=1.0)
    rerank_chart = {
        "precision": polyline([p.precision for p in points], xs),
        "recall": polyline([p.recall for p in points], xs),
        "lo": lo,
        "hi": hi,
    }
    if proposal.rerank_min_score is not None:
        rerank_chart["marker"] = _x(proposal.rerank_min_score, lo, hi)
    abstain = proposal.abstain_points
    abstain_chart = {
        "answered": polyline(
            [p.recall for p in abstain], [p.threshold for p in abstain], x_lo=0, x_hi=1
        )
    }
    if proposal.abstain_threshold is not None:
        abstain_chart["marker"] = _x(proposal.abstain_threshold, 0.0, 1.0)
    context = {
        "kb": kb,
        "is_owner": True,
        "proposal": proposal,
        "rerank_chart": rerank_chart,
        "abstain_chart": abstain_chart,
        "rerank_rows": points[:: max(1, len(points) // 12)],
    }
    return render(request, "curation/cases_thresholds.html", context)


urlpatterns = [
    path("kb/<int:pk>/cases/", kb_cases, name="kb_cases"),
    path("kb/<int:pk>/cases/save", kb_case_save, name="kb_case_save"),
    path("kb/<int:pk>/cases/<int:case_id>/delete", kb_case_delete, name="kb_case_delete"),
    path("kb/<int:pk>/cases/run", kb_cases_run, name="kb_cases_run"),
    path("kb/<int:pk>/cases/thresholds", kb_case_thresholds, name="kb_case_thresholds"),
]
