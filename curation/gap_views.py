"""The knowledge gaps page of a knowledge base (owners only) and its actions (their URL
patterns are at the bottom)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from curation.audit import audit_faq_add
from curation.faq import FaqError
from curation.gaps import (
    gap_answer,
    gap_document_added,
    gap_mark_out_of_scope,
    gap_reopen,
    gaps_for,
    gaps_refresh_quietly,
    recheck_pending,
)
from curation.models import Gap, GapStatus
from curation.tasks import recheck_enqueue
from ingestion.selectors import knowledge_base_get
from ingestion.services import UploadRejected, document_create
from ragapp.audit import audit_record


@login_required
def kb_gaps(request, pk: int):
    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    gaps_refresh_quietly(knowledge_base=kb)
    status = request.GET.get("status", "")
    if status not in GapStatus.values:
        status = ""
    gaps = list(gaps_for(knowledge_base=kb, status=status or None).prefetch_related("questions"))
    for gap in gaps:
        gap.pending = recheck_pending(gap)
    return render(
        request,
        "curation/gaps.html",
        {
            "kb": kb,
            "is_owner": True,
            "gaps": gaps,
            "status": status,
            "statuses": GapStatus.choices,
        },
    )


def _gap(request, pk: int, gap_id: int) -> Gap:
    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    return get_object_or_404(
        Gap.objects.select_related("knowledge_base"), pk=gap_id, knowledge_base=kb
    )


def _back(gap: Gap):
    return redirect(reverse("kb_gaps", args=[gap.knowledge_base_id]) + f"#gap-{gap.pk}")


@login_required
@require_POST
def kb_gap_answer(request, pk: int, gap_id: int):
    gap = _gap(request, pk, gap_id)
    answer = request.POST.get("answer", "")
    try:
        with transaction.atomic():
            entry = gap_answer(
                gap=gap, answer=answer, question=request.POST.get("question"), user=request.user
            )
            audit_faq_add(request=request, entry=entry)
            recheck_enqueue(gap)
    except FaqError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, _("Your answer is now an FAQ entry; the questions are being asked again.")
        )
    return _back(gap)


@login_required
@require_POST
def kb_gap_upload(request, pk: int, gap_id: int):
    gap = _gap(request, pk, gap_id)
    upload = request.FILES.get("file")
    if upload is None:
        messages.error(request, _("Choose a file to upload."))
        return _back(gap)
    try:
        with transaction.atomic():
            result = document_create(
                knowledge_base=gap.knowledge_base,
                fileobj=upload,
                name=upload.name,
                uploaded_by=request.user,
            )
            if result.created:
                audit_record(request=request, action="document.upload", obj=result.document)
            gap_document_added(gap=gap, document=result.document, user=request.user)
            recheck_enqueue(gap)
    except UploadRejected as exc:
        messages.error(request, str(exc))
        return _back(gap)
    if result.created:
        messages.success(
            request,
            _("Uploaded; the questions are asked again once the document is ingested."),
        )
    else:
        messages.info(request, result.error)
    return _back(gap)


@login_required
@require_POST
def kb_gap_out_of_scope(request, pk: int, gap_id: int):
    gap = _gap(request, pk, gap_id)
    with transaction.atomic():
        gap_mark_out_of_scope(gap=gap, user=request.user)
        recheck_enqueue(gap)
    return _back(gap)


@login_required
@require_POST
def kb_gap_reopen(request, pk: int, gap_id: int):
    gap = _gap(request, pk, gap_id)
    gap_reopen(gap=gap, user=request.user)
    return _back(gap)


@login_required
@require_POST
def kb_gap_recheck(request, pk: int, gap_id: int):
    gap = _gap(request, pk, gap_id)
    recheck_enqueue(gap)
    messages.info(request, _("The questions are being asked again; reload in a moment."))
    return _back(gap)


urlpatterns = [
    path("kb/<int:pk>/gaps/", kb_gaps, name="kb_gaps"),
    path("kb/<int:pk>/gaps/<int:gap_id>/answer", kb_gap_answer, name="kb_gap_answer"),
    path("kb/<int:pk>/gaps/<int:gap_id>/upload", kb_gap_upload, name="kb_gap_upload"),
    path(
        "kb/<int:pk>/gaps/<int:gap_id>/out-of-scope",
        kb_gap_out_of_scope,
        name="kb_gap_out_of_scope",
    ),
    path("kb/<int:pk>/gaps/<int:gap_id>/reopen", kb_gap_reopen, name="kb_gap_reopen"),
    path("kb/<int:pk>/gaps/<int:gap_id>/recheck", kb_gap_recheck, name="kb_gap_recheck"),
]
