"""Hit testing (the retrieval playground): one question against one knowledge base, the
recall list and the reranked list side by side with the cut-off line; and the owner's
"adapt the reranker" page. Thin: the work is retrieval.services and retrieval.training."""

from __future__ import annotations

import json
from dataclasses import replace

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods

from ingestion.forms import ThresholdForm
from ingestion.models import Role
from ingestion.scope import InvalidFilter, parse_filters
from ingestion.selectors import knowledge_base_get
from ragapp.warmup import is_warming
from retrieval.cutoffs import apply_cutoffs
from retrieval.models import RerankerModel, TrainingStatus
from retrieval.services import cutoffs_for, search

MAX_QUERY_CHARS = 1000


def _number(raw: str | None, kind):
    """A trial cut-off from the query string; None when absent, not a number or not finite
    (NaN and infinity would compare as nothing or everything)."""
    from ragapp.validation import parse_float, parse_int

    if raw is None or raw.strip() == "":
        return None
    return parse_int(raw) if kind is int else parse_float(raw)


@login_required
@require_GET
def hit_test(request, pk: int):
    kb = knowledge_base_get(user=request.user, pk=pk)
    is_owner = kb.role_of(request.user) == Role.OWNER
    query = (request.GET.get("q") or "").strip()[:MAX_QUERY_CHARS]
    context = {"kb": kb, "query": query, "is_owner": is_owner}
    trial = {
        "top_k": _number(request.GET.get("top_k"), int),
        "min_score": _number(request.GET.get("min_score"), float),
        "max_drop": _number(request.GET.get("max_drop"), float),
    }
    # After a restart the models may still be loading (ragapp.warmup): say so, and let the
    # page re-submit when they are ready, instead of a search that hangs with no feedback.
    context["warming"] = bool(query) and is_warming()
    filters, context["filters_text"] = None, (request.GET.get("filters") or "").strip()[:4000]
    try:  # the metadata filter, in the filter language (ingestion.scope), as JSON
        filters = parse_filters(json.loads(context["filters_text"] or "null"))
    except ValueError as exc:  # InvalidFilter is a ValueError, as is bad JSON
        context["filter_error"] = str(exc) if isinstance(exc, InvalidFilter) else _("Not JSON.")
    if query and not context["warming"] and "filter_error" not in context:
        result = search(
            knowledge_bases=[kb],
            query=query,
            top_k=trial["top_k"],
            user=request.user,
            filters=filters,
        )
        cutoffs = result.cutoffs
        if "min_score" in request.GET:
            cutoffs = replace(cutoffs, min_score=trial["min_score"])
        if "max_drop" in request.GET:
            cutoffs = replace(cutoffs, max_drop=trial["max_drop"])
        kept = {c.chunk_id for c in apply_cutoffs(result.reranked, cutoffs)}
        rerank_rank = {c.chunk_id: i for i, c in enumerate(result.reranked, start=1)}
        recalled = [
            {
                "c": c,
                "rank": c.recall_rank,
                "rerank_rank": rerank_rank.get(c.chunk_id),
                "kept": c.chunk_id in kept,
            }
            for c in result.recalled
        ]
        reranked = [
            {"c": c, "rank": i, "move": c.recall_rank - i, "kept": c.chunk_id in kept}
            for i, c in enumerate(result.reranked, start=1)
        ]
        # The answer order: what passes the saved cut-offs, re-ordered by sentence support
        # (the same list and order POST /api/v1/search returns and the chat answers from).
        final = [
            {"c": c, "rank": i, "rerank_rank": rerank_rank.get(c.chunk_id)}
            for i, c in enumerate(result.results, start=1)
        ]
        context.update(
            result=result,
            cutoffs=cutoffs,
            recalled=recalled,
            reranked=reranked,
            final=final,
            n_kept=len(kept),
        )
    else:
        cutoffs = None
    shown = cutoffs or cutoffs_for([kb])
    context["trial"] = {
        "top_k": shown.top_k,
        "min_score": "" if shown.min_score is None else shown.min_score,
        "max_drop": "" if shown.max_drop is None else shown.max_drop,
    }
    if is_owner:
        context["threshold_form"] = ThresholdForm(
            instance=kb,
            initial={
                "rerank_top_k": shown.top_k,
                "rerank_min_score": shown.min_score,
                "rerank_max_drop": shown.max_drop,
            },
        )
    return render(request, "retrieval/hit_test.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def kb_reranker(request, pk: int):
    """Owners adapt the reranker to this knowledge base (a Celery task trains on its own
    documents, QA pairs and chat feedback), watch the progress, see the held-out table,
    and can switch back to what was used before."""
    from retrieval.tasks import reranker_train_enqueue
    from retrieval.training.service import reranker_deactivate

    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    runs = list(RerankerModel.objects.filter(knowledge_base=kb)[:20])
    busy = any(r.status in (TrainingStatus.QUEUED, TrainingStatus.TRAINING) for r in runs)
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "adapt":
            if busy:
                messages.error(request, _("A training run is already in progress."))
            else:
                reranker_train_enqueue(knowledge_base=kb, base=settings.RAG_RERANKER_TRAIN_BASE)
                messages.success(request, _("Training started. This page shows its progress."))
        elif action == "deactivate":
            reranker_deactivate(knowledge_base=kb)
            messages.success(request, _("Switched back to the previous reranker."))
        return redirect("kb_reranker", pk=kb.pk)
    active = next((r for r in runs if r.is_active), None)
    for run in runs:
        run.table = [
            {
                "language": language,
                "held_out": m["queries"]["held_out"],
                "recall": m["recall_order"]["ndcg@10"],
                "current": m.get("base", {}).get("ndcg@10"),
                "new": m["trained"]["ndcg@10"],
            }
            for language, m in (run.metrics or {}).items()
        ]
    context = {
        "kb": kb,
        "is_owner": True,
        "runs": runs,
        "active": active,
        "busy": busy,
        "in_use": kb.reranker or settings.RAG_DEFAULT_RERANKER,
        "train_base": settings.RAG_RERANKER_TRAIN_BASE,
    }
    return render(request, "retrieval/kb_reranker.html", context)
