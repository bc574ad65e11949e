"""Knowledge bases and the upload portal. Thin: parse input, call a service, shape output."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count, Q
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from ingestion.forms import KnowledgeBaseForm, UrlForm
from ingestion.models import DocumentStatus, Role
from ingestion.selectors import document_get, knowledge_base_get, knowledge_bases_for
from ingestion.services import (
    UploadRejected,
    document_create,
    document_create_from_url,
    document_delete,
    document_enqueue,
)


@login_required
def kb_list(request):
    if request.method == "POST":
        form = KnowledgeBaseForm(request.POST)
        if form.is_valid():
            kb = form.save(commit=False)
            kb.owner = request.user
            kb.save()
            return redirect("kb_detail", pk=kb.pk)
    else:
        form = KnowledgeBaseForm()
    kbs = knowledge_bases_for(user=request.user).annotate(
        n_documents=Count("documents", distinct=True),
        n_ready=Count("documents", filter=Q(documents__status=DocumentStatus.READY), distinct=True),
        n_failed=Count(
            "documents", filter=Q(documents__status=DocumentStatus.FAILED), distinct=True
        ),
    )
    return render(request, "ingestion/kb_list.html", {"knowledge_bases": kbs, "form": form})


@login_required
def kb_detail(request, pk: int):
    kb = knowledge_base_get(user=request.user, pk=pk)
    role = kb.role_of(request.user)
    return render(
        request,
        "ingestion/kb_detail.html",
        {
            "kb": kb,
            "can_edit": role in (Role.OWNER, Role.EDITOR),
            "url_form": UrlForm(),
            "max_upload_mb": settings.RAG_MAX_UPLOAD_BYTES // (1024 * 1024),
            "max_files": settings.RAG_MAX_FILES_PER_UPLOAD,
            "allowed": ", ".join(sorted(settings.RAG_ALLOWED_EXTENSIONS)),
        },
    )


@login_required
@require_GET
def kb_documents(request, pk: int):
    """Status and progress of every document, polled by the portal page."""
    kb = knowledge_base_get(user=request.user, pk=pk)
    docs = kb.documents.annotate(n_chunks=Count("chunks", filter=Q(chunks__is_parent=False)))
    return JsonResponse(
        {
            "documents": [
                {
                    "id": d.pk,
                    "name": d.original_name,
                    "status": d.status,
                    "status_label": d.get_status_display(),
                    "progress": d.progress,
                    "error": d.error,
                    "size": d.size,
                    "pages": d.page_count,
                    "chunks": d.n_chunks,
                    "source_url": d.source_url,
                    "updated_at": d.updated_at.isoformat(),
                }
                for d in docs
            ]
        }
    )


@login_required
@require_POST
def kb_upload(request, pk: int):
    kb = knowledge_base_get(user=request.user, pk=pk, write=True)
    files = request.FILES.getlist("files")
    accepted, refused = [], []
    if len(files) > settings.RAG_MAX_FILES_PER_UPLOAD:
        refused.append(
            {
                "name": "",
                "error": _("Too many files at once (at most %(n)d).")
                % {"n": settings.RAG_MAX_FILES_PER_UPLOAD},
            }
        )
        files = []
    for upload in files:
        try:
            with transaction.atomic():
                result = document_create(
                    knowledge_base=kb, fileobj=upload, name=upload.name, uploaded_by=request.user
                )
        except UploadRejected as exc:
            refused.append({"name": upload.name, "error": str(exc)})
            continue
        if result.created:
            accepted.append({"id": result.document.pk, "name": upload.name})
        else:
            refused.append({"name": upload.name, "error": result.error})
    if (
        request.headers.get("x-requested-with") == "XMLHttpRequest"
        or request.accepts("application/json")
        and not request.accepts("text/html")
    ):
        return JsonResponse({"accepted": accepted, "refused": refused})
    for item in refused:
        messages.error(request, item["error"])
    if accepted:
        messages.success(request, _("%(n)d file(s) queued.") % {"n": len(accepted)})
    return redirect("kb_detail", pk=kb.pk)


@login_required
@require_POST
def kb_add_url(request, pk: int):
    kb = knowledge_base_get(user=request.user, pk=pk, write=True)
    form = UrlForm(request.POST)
    if form.is_valid():
        with transaction.atomic():
            document_create_from_url(
                knowledge_base=kb, url=form.cleaned_data["url"], uploaded_by=request.user
            )
        messages.success(request, _("The page is queued for fetching."))
    else:
        messages.error(request, _("Enter a valid http(s) address."))
    return redirect("kb_detail", pk=kb.pk)


@login_required
@require_POST
def document_retry(request, pk: int):
    document = document_get(user=request.user, pk=pk, write=True)
    with transaction.atomic():
        document_enqueue(document=document, force=True)
    if request.headers.get("x-requested-with") == "XMLHttpRequest":
        return JsonResponse({"ok": True})
    return redirect("kb_detail", pk=document.knowledge_base_id)


@login_required
@require_POST
def document_remove(request, pk: int):
    document = document_get(user=request.user, pk=pk, write=True)
    kb_id = document.knowledge_base_id
    with transaction.atomic():
        document_delete(document=document)
    if request.headers.get("x-requested-with") == "XMLHttpRequest":
        return JsonResponse({"ok": True})
    return redirect("kb_detail", pk=kb_id)


@login_required
@require_GET
def document_file(request, pk: int):
    """The original file, inline (a PDF opens at #page=N in the browser's viewer)."""
    from django.http import FileResponse, Http404

    document = document_get(user=request.user, pk=pk)
    if not document.file:
        raise Http404("This document has no stored file.")
    response = FileResponse(
        document.file.open("rb"),
        content_type=document.mime_type or "application/octet-stream",
        as_attachment=not document.original_name.lower().endswith(
            (".pdf", ".txt", ".png", ".jpg", ".jpeg")
        ),
        filename=document.original_name,
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox"
    return response


@login_required
@require_GET
def document_view(request, pk: int):
    """The document as text, passage by passage, with the cited passage highlighted."""
    document = document_get(user=request.user, pk=pk)
    chunks = document.chunks.filter(is_parent=False).order_by("ordinal")
    try:
        highlight = int(request.GET.get("chunk", "0"))
    except ValueError:
        highlight = 0
    return render(
        request,
        "ingestion/document_view.html",
        {"document": document, "chunks": chunks, "highlight": highlight},
    )
