"""Knowledge bases and the upload portal. Thin: parse input, call a service, shape output."""

from __future__ import annotations

from bisect import bisect_right

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from curation.tasks import enqueue_regression
from ingestion.chunk_editing import (
    ChunkEditError,
    chunk_add,
    chunk_delete,
    chunk_update,
    editable_chunk_get,
    manual_edits,
)
from ingestion.document_list import (
    DOCUMENTS_PER_PAGE,
    MAX_BULK_DOCUMENTS,
    PER_PAGE_CHOICES,
    BulkRejected,
    clean_ids,
    document_list_context,
    documents_bulk,
    documents_by_ids,
    documents_listed,
    knowledge_bases_named,
    list_query_from,
    status_counts,
    with_chunk_counts,
    with_faq_display,
    with_summaries,
)
from ingestion.documents import (
    InvalidMetadata,
    clean_tags,
    document_set_metadata,
    meta_as_lines,
    parse_meta_lines,
)
from ingestion.forms import (
    GroupMemberForm,
    KnowledgeBaseForm,
    KnowledgeBaseSettingsForm,
    MemberForm,
    ThresholdForm,
    UrlForm,
)
from ingestion.models import (
    GroupMembership,
    Membership,
    ReviewStatus,
    Role,
)
from ingestion.review import ReviewError, document_approve, document_reject, pending_documents
from ingestion.selectors import (
    document_get,
    knowledge_base_get,
    knowledge_bases_for,
)
from ingestion.services import (
    UploadRejected,
    delete_refusal,
    document_create_from_url,
    document_delete,
    document_enqueue,
    documents_upload,
    knowledge_base_delete,
    reingest_refusal,
)
from ragapp.audit import (
    audit_record,
    audit_role_grant,
    audit_settings,
    form_changes,
    grants_remove,
)
from ragapp.validation import storable_text


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
    query = storable_text(request.GET.get("q", "")).strip()[:200]
    kbs = with_summaries(
        user=request.user,
        knowledge_bases=knowledge_bases_named(knowledge_bases_for(user=request.user), query),
    )
    return render(
        request, "ingestion/kb_list.html", {"knowledge_bases": kbs, "form": form, "query": query}
    )


def _redirect_back(request, default):
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return default


@login_required
def kb_detail(request, pk: int):
    """The knowledge base's documents, a page at a time: searched by name, filtered by
    status and type, sorted; editors and owners re-ingest or delete a selection."""
    kb = knowledge_base_get(user=request.user, pk=pk)
    role = kb.role_of(request.user)
    page, query, per_page = _documents_page(request, kb)
    return render(
        request,
        "ingestion/kb_detail.html",
        {
            "kb": kb,
            "role": role,
            "can_edit": role in (Role.OWNER, Role.EDITOR),
            # Contributors add documents too (reviewed first when the knowledge base asks).
            "can_upload": role in (Role.OWNER, Role.EDITOR, Role.CONTRIBUTOR),
            "is_owner": role == Role.OWNER,
            "url_form": UrlForm(),
            "max_upload_mb": settings.RAG_MAX_UPLOAD_BYTES // (1024 * 1024),
            "max_files": settings.RAG_MAX_FILES_PER_UPLOAD,
            "allowed": ", ".join(sorted(settings.RAG_ALLOWED_EXTENSIONS)),
            **document_list_context(
                page=page,
                query=query,
                per_page=per_page,
                counts=status_counts(user=request.user, knowledge_base=kb),
            ),
        },
    )


def _documents_page(request, kb):
    """The page of the documents list that the query string asks for (the portal and its
    JSON feed read the same parameters)."""
    get = request.GET
    query = list_query_from(
        q=get.get("q"),
        status=get.get("status"),
        type=get.get("type"),
        sort=get.get("sort"),
        strict=False,
    )
    per_page = _positive_int(get.get("per_page"))
    if per_page not in PER_PAGE_CHOICES:
        per_page = DOCUMENTS_PER_PAGE
    docs = documents_listed(user=request.user, knowledge_base=kb, query=query)
    page = Paginator(docs, per_page).get_page(get.get("page"))
    page.object_list = with_faq_display(
        with_chunk_counts(page.object_list),
        knowledge_base=kb,
        can_open_faq=kb.role_of(request.user) in (Role.OWNER, Role.EDITOR),
    )
    return page, query, per_page


@login_required
@require_GET
def kb_documents(request, pk: int):
    """Status and progress for the portal's poll: ?ids=1,2,3 (the rows on its page, so a
    poll costs the same at ten documents or ten thousand), else one page of the list with
    the portal's parameters (q, status, type, sort, page, per_page)."""
    kb = knowledge_base_get(user=request.user, pk=pk)
    if "ids" in request.GET:
        ids = clean_ids(request.GET["ids"].split(","))
        docs = with_faq_display(
            with_chunk_counts(documents_by_ids(user=request.user, knowledge_base=kb, ids=ids)),
            knowledge_base=kb,
            can_open_faq=kb.role_of(request.user) in (Role.OWNER, Role.EDITOR),
        )
        extra = {}
    else:
        page, _query, _per_page = _documents_page(request, kb)
        docs = page.object_list
        extra = {
            "count": page.paginator.count,
            "page": page.number,
            "num_pages": page.paginator.num_pages,
        }
    return JsonResponse(
        {
            "documents": [
                {
                    "id": d.pk,
                    "name": d.display_name,
                    # The FAQ document: its entries, edited on the FAQ page (view_url, for
                    # those who may open it), never re-ingested or deleted from the list.
                    "faq": d.faq,
                    **({"view_url": d.view_url} if d.view_url else {}),
                    "status": d.status,
                    "status_label": d.get_status_display(),
                    "progress": d.progress,
                    "queue_position": d.queue_place.position if d.queue_place else None,
                    "eta_seconds": d.queue_place.eta_seconds if d.queue_place else None,
                    "error": d.error,
                    "size": d.size,
                    "pages": d.page_count,
                    "chunks": d.n_chunks,
                    # The portal asks before a re-ingest replaces these.
                    "manual_edits": d.manual_edits,
                    "source_url": d.source_url,
                    # Contributions: "pending" (waiting for review) or "rejected" (+ reason).
                    "review_status": d.review_status,
                    "review_label": d.get_review_status_display(),
                    "review_reason": d.review_reason,
                    "updated_at": d.updated_at.isoformat(),
                }
                for d in docs
            ],
            **extra,
        }
    )


@login_required
@require_POST
def kb_documents_bulk(request, pk: int):
    """Re-ingest or delete the selected documents (editors and owners; 404 for others),
    then back to the same page of the list with what was done and what was skipped."""
    kb = knowledge_base_get(user=request.user, pk=pk, write=True)
    action = request.POST.get("action", "")
    try:
        with transaction.atomic():
            results = documents_bulk(
                user=request.user,
                knowledge_base=kb,
                action=action,
                ids=clean_ids(request.POST.getlist("ids")),
                request=request,
            )
    except BulkRejected:
        messages.error(
            request,
            _("Select at least one document, and at most %(n)d.") % {"n": MAX_BULK_DOCUMENTS},
        )
        return _redirect_back(request, redirect("kb_detail", pk=kb.pk))
    done = sum(r.ok for r in results)
    if done:
        messages.success(
            request,
            (
                _("%(n)d document(s) deleted.")
                if action == "delete"
                else _("%(n)d document(s) queued again.")
            )
            % {"n": done},
        )
    for reason in sorted({r.message for r in results if not r.ok}):
        n = sum(1 for r in results if not r.ok and r.message == reason)
        messages.error(
            request, _("%(n)d document(s) skipped: %(reason)s") % {"n": n, "reason": reason}
        )
    return _redirect_back(request, redirect("kb_detail", pk=kb.pk))


@login_required
@require_POST
def kb_upload(request, pk: int):
    kb = knowledge_base_get(user=request.user, pk=pk, upload=True)
    files = request.FILES.getlist("files")
    accepted, refused = [], []
    tags, meta = [], {}
    try:  # optional: tags comma-separated, metadata key=value per line
        tags = clean_tags(request.POST.get("tags", ""))
        meta = parse_meta_lines(request.POST.get("meta", ""))
    except InvalidMetadata as exc:
        refused.append({"name": "", "error": str(exc)})
        files = []
    too_many = len(files) > settings.RAG_MAX_FILES_PER_UPLOAD
    if too_many:
        refused.append(
            {
                "name": "",
                "error": _("Too many files at once (at most %(n)d).")
                % {"n": settings.RAG_MAX_FILES_PER_UPLOAD},
            }
        )
        files = []
    for outcome in documents_upload(
        knowledge_base=kb,
        files=((upload.name, upload) for upload in files),
        uploaded_by=request.user,
        request=request,
        tags=tags,
        meta=meta,
    ):
        if outcome.accepted:
            accepted.append(
                {
                    "id": outcome.document.pk,
                    "name": outcome.name,
                    "review_status": outcome.document.review_status,
                }
            )
        else:
            refused.append({"name": outcome.name, "error": outcome.error, "reason": outcome.reason})
    if (
        request.headers.get("x-requested-with") == "XMLHttpRequest"
        or request.accepts("application/json")
        and not request.accepts("text/html")
    ):
        return JsonResponse(
            {"accepted": accepted, "refused": refused}, status=413 if too_many else 200
        )
    for item in refused:
        messages.error(request, item["error"])
    pending = sum(item["review_status"] == ReviewStatus.PENDING for item in accepted)
    if pending:
        messages.success(request, _("%(n)d file(s) sent for review.") % {"n": pending})
    if len(accepted) > pending:
        messages.success(request, _("%(n)d file(s) queued.") % {"n": len(accepted) - pending})
    return redirect("kb_detail", pk=kb.pk)


@login_required
@require_POST
def kb_add_url(request, pk: int):
    kb = knowledge_base_get(user=request.user, pk=pk, upload=True)
    form = UrlForm(request.POST)
    if form.is_valid():
        try:
            with transaction.atomic():
                document = document_create_from_url(
                    knowledge_base=kb, url=form.cleaned_data["url"], uploaded_by=request.user
                )
                audit_record(request=request, action="document.upload", obj=document)
        except UploadRejected as exc:
            messages.error(request, str(exc))
        else:
            pending = document.review_status == ReviewStatus.PENDING
            messages.success(
                request,
                _("The page is sent for review.")
                if pending
                else _("The page is queued for fetching."),
            )
    else:
        messages.error(request, _("Enter a valid http(s) address."))
    return redirect("kb_detail", pk=kb.pk)


def _refused(request, document, message: str):
    """An action that does not apply to this document (the FAQ document): 409 with the
    reason for the list's script, else the reason as a message on the FAQ page."""
    if request.headers.get("x-requested-with") == "XMLHttpRequest":
        return JsonResponse({"ok": False, "error": message}, status=409)
    messages.error(request, message)
    return redirect("kb_faqs", pk=document.knowledge_base_id)


@login_required
@require_POST
def document_retry(request, pk: int):
    document = document_get(user=request.user, pk=pk, write=True)
    if document.review_status != ReviewStatus.APPROVED:
        # Indexing a contribution is approving it: that goes through the review queue.
        raise PermissionDenied(_("This document is not approved."))
    refusal = reingest_refusal(document=document)
    if refusal:
        return _refused(request, document, refusal)
    with transaction.atomic():
        document_enqueue(document=document, force=True)
    if request.headers.get("x-requested-with") == "XMLHttpRequest":
        return JsonResponse({"ok": True})
    messages.success(request, _("%(name)s is queued again.") % {"name": document.original_name})
    return _redirect_back(request, redirect("kb_detail", pk=document.knowledge_base_id))


@login_required
@require_POST
def document_remove(request, pk: int):
    document = document_get(user=request.user, pk=pk, write=True)
    kb_id = document.knowledge_base_id
    refusal = delete_refusal(document=document)
    if refusal:
        return _refused(request, document, refusal)
    with transaction.atomic():
        audit_record(request=request, action="document.delete", obj=document)
        document_delete(document=document)
    if request.headers.get("x-requested-with") == "XMLHttpRequest":
        return JsonResponse({"ok": True})
    return redirect("kb_detail", pk=kb_id)


@login_required
@require_GET
def document_file(request, pk: int):
    """The original file: real PDFs and images inline (a PDF opens at #page=N), else a download."""
    from django.http import FileResponse, Http404

    from ingestion.serving import SNIFF_BYTES, safe_filename, serving_for

    document = document_get(user=request.user, pk=pk)
    if not document.file:
        raise Http404("This document has no stored file.")
    handle = document.file.open("rb")
    # The bytes decide, never the (attacker-chosen) name or remote MIME type: see serving.py.
    serving = serving_for(handle.read(SNIFF_BYTES))
    handle.seek(0)
    response = FileResponse(
        handle,
        content_type=serving.content_type,
        as_attachment=not serving.inline,
        filename=safe_filename(document.original_name),
    )
    response["X-Content-Type-Options"] = "nosniff"
    if serving.csp:
        response["Content-Security-Policy"] = serving.csp
    return response


CHUNKS_PER_PAGE = 50


@login_required
@require_GET
def document_view(request, pk: int):
    """The document's chunks, a page at a time, searchable, with the cited one highlighted
    (?chunk= opens the page that holds it); editors also manage the chunks here."""
    document = document_get(user=request.user, pk=pk)
    chunks = document.chunks.filter(is_parent=False).order_by("ordinal")
    query = storable_text(request.GET.get("q", "")).strip()[:500]
    if query:
        chunks = chunks.filter(Q(text__icontains=query) | Q(heading_path__icontains=query))
    highlight = _positive_int(request.GET.get("chunk")) or 0
    page_number = _positive_int(request.GET.get("page"))
    if page_number is None and highlight:
        target = chunks.filter(pk=highlight).values_list("ordinal", flat=True).first()
        if target is not None:
            before = chunks.filter(ordinal__lt=target).count()
            page_number = before // CHUNKS_PER_PAGE + 1
    page = Paginator(chunks, CHUNKS_PER_PAGE).get_page(page_number)
    # Numbers are positions in the whole document, whatever the search keeps.
    ordinals = list(document.chunks.filter(is_parent=False).values_list("ordinal", flat=True))
    for chunk in page:
        chunk.number = bisect_right(ordinals, chunk.ordinal)
        chunk.questions_text = "\n".join(chunk.questions)
    role = document.knowledge_base.role_of(request.user)
    return render(
        request,
        "ingestion/document_view.html",
        {
            "document": document,
            "page": page,
            "query": query,
            "highlight": highlight,
            "can_edit": role in (Role.OWNER, Role.EDITOR),
            "manual_edits": manual_edits(document=document),
            "meta_lines": meta_as_lines(document.meta),
            **(_visibility_context(document) if role in (Role.OWNER, Role.EDITOR) else {}),
        },
    )


def _visibility_context(document) -> dict:
    """The "Visible to" form's choices: the knowledge base's members other than its owner
    (owners always see everything), and its groups."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    kb = document.knowledge_base
    users = (
        get_user_model()
        .objects.filter(kb_memberships__knowledge_base=kb)
        .exclude(pk=kb.owner_id)
        .order_by("username")
        .distinct()
    )
    return {
        "visibility_users": users,
        "visibility_groups": Group.objects.filter(kb_memberships__knowledge_base=kb).order_by(
            "name"
        ),
        "visible_user_ids": set(document.visible_to_users.values_list("pk", flat=True)),
        "visible_group_ids": set(document.visible_to_groups.values_list("pk", flat=True)),
    }


@login_required
@require_POST
def document_visibility(request, pk: int):
    """Editors and owners restrict the document to some members, or open it to everyone."""
    from ingestion.services import document_set_visibility
    from ingestion.visibility import InvalidVisibility, visibility_from

    document = document_get(user=request.user, pk=pk, write=True)
    value = None
    if request.POST.get("restricted"):
        value = {"users": request.POST.getlist("users"), "groups": request.POST.getlist("groups")}
    try:
        visibility = visibility_from(knowledge_base=document.knowledge_base, value=value)
    except InvalidVisibility as exc:
        messages.error(request, str(exc))
    else:
        with transaction.atomic():
            document_set_visibility(document=document, visible_to=visibility)
            audit_record(request=request, action="document.visibility", obj=document)
        messages.success(request, _("Visibility saved."))
    return redirect("document_view", pk=document.pk)


@login_required
@require_POST
def document_metadata(request, pk: int):
    """Editors and owners replace the document's tags and key=value metadata."""
    document = document_get(user=request.user, pk=pk, write=True)
    try:
        with transaction.atomic():
            document_set_metadata(
                document=document,
                tags=clean_tags(request.POST.get("tags", "")),
                meta=parse_meta_lines(request.POST.get("meta", "")),
            )
            audit_record(
                request=request,
                action="document.metadata",
                obj=document,
                details={"tags": document.tags, "meta": document.meta},
            )
    except InvalidMetadata as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Metadata saved."))
    return redirect("document_view", pk=document.pk)


def _back_to(request, chunk_id: int | None, document_id: int):
    from django.urls import reverse

    url = reverse("document_view", args=[document_id])
    default = redirect(f"{url}?chunk={chunk_id}#chunk-{chunk_id}" if chunk_id else url)
    return _redirect_back(request, default)


@login_required
@require_POST
def chunk_add_view(request, pk: int):
    document = document_get(user=request.user, pk=pk, write=True)
    try:
        chunk = chunk_add(
            document=document,
            text=request.POST.get("text", ""),
            questions=request.POST.get("questions", "").splitlines(),
        )
    except ChunkEditError as exc:
        messages.error(request, str(exc))
        return _back_to(request, None, document.pk)
    messages.success(request, _("Chunk added."))
    return _back_to(request, chunk.pk, document.pk)


@login_required
@require_POST
def chunk_edit_view(request, pk: int):
    """Text and questions (one per line), or with `enabled` only the enabled state."""
    chunk = editable_chunk_get(user=request.user, pk=pk)
    enabled = request.POST.get("enabled")
    try:
        if enabled is not None:
            chunk_update(chunk=chunk, enabled=enabled == "1")
        else:
            chunk_update(
                chunk=chunk,
                text=request.POST.get("text", ""),
                questions=request.POST.get("questions", "").splitlines(),
            )
    except ChunkEditError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Chunk saved."))
    return _back_to(request, chunk.pk, chunk.document_id)


@login_required
@require_POST
def chunk_delete_view(request, pk: int):
    chunk = editable_chunk_get(user=request.user, pk=pk)
    try:
        chunk_delete(chunk=chunk)
    except ChunkEditError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Chunk deleted."))
    return _back_to(request, None, chunk.document_id)


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if number > 0 else None


@login_required
@require_GET
def document_pdf(request, pk: int):
    """A PDF in the app's own viewer (static/js/pdf_viewer.js) at the cited page, with the cited
    passage highlighted; a document that is not a PDF opens in the text view instead."""
    from django.http import Http404
    from django.urls import reverse

    from ingestion.serving import PDF, SNIFF_BYTES, serving_for

    document = document_get(user=request.user, pk=pk)
    if not document.file:
        raise Http404("This document has no stored file.")
    chunk_id = _positive_int(request.GET.get("chunk"))
    # Scoped to this document: a chunk id from elsewhere shows nothing.
    chunk = document.chunks.filter(pk=chunk_id).first() if chunk_id else None
    with document.file.open("rb") as handle:
        is_pdf = serving_for(handle.read(SNIFF_BYTES)).content_type == PDF
    if not is_pdf:
        anchor = f"?chunk={chunk.pk}#chunk-{chunk.pk}" if chunk else ""
        return redirect(reverse("document_view", args=[pk]) + anchor)
    page = _positive_int(request.GET.get("page")) or (chunk.page if chunk else None) or 1
    # The viewer also marks the passage's continuation on the chunk's last page.
    page_end = chunk.page_end if chunk and chunk.page == page and chunk.page_end else page
    context = {
        "document": document,
        "chunk": chunk,
        "passage": chunk.text if chunk else "",
        "page": page,
        "page_end": max(page, page_end),
    }
    return render(request, "ingestion/pdf_viewer.html", context)


@login_required
def kb_settings(request, pk: int):
    """Rename (and describe) a knowledge base: owners only."""
    from chat.abstention import model as abstention_model
    from chat.abstention import model_key

    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    form = KnowledgeBaseSettingsForm(request.POST or None, instance=kb)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            form.save()
            audit_settings(request=request, knowledge_base=kb, changes=form_changes(form))
            enqueue_regression(knowledge_base=kb, trigger="settings", changed=form.changed_data)
        messages.success(request, _("Saved."))
        return redirect("kb_detail", pk=kb.pk)
    defaults = {
        lang: abstention_model().entry(model_key(lang))["threshold"] for lang in ("en", "zh")
    }
    return render(
        request,
        "ingestion/kb_settings.html",
        {
            "kb": kb,
            "form": form,
            "is_owner": True,
            "abstain_defaults": defaults,
            "abstain_calibration": (kb.last_evaluation or {}).get("abstention"),
        },
    )


@login_required
def kb_delete(request, pk: int):
    """GET asks for confirmation; POST deletes the knowledge base with all its documents."""
    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    if request.method == "POST":
        name = kb.name
        with transaction.atomic():
            audit_record(request=request, action="knowledge_base.delete", obj=kb, knowledge_base=kb)
            knowledge_base_delete(knowledge_base=kb)
        messages.success(request, _("Knowledge base %(name)s deleted.") % {"name": name})
        return redirect("kb_list")
    stats = kb.documents.aggregate(n=Count("pk"), size=Sum("size"))
    return render(
        request, "ingestion/kb_confirm_delete.html", {"kb": kb, "stats": stats, "is_owner": True}
    )


@login_required
def kb_members(request, pk: int):
    """Any member sees who else is in; the owner adds users and groups and changes roles."""
    kb = knowledge_base_get(user=request.user, pk=pk)
    is_owner = kb.role_of(request.user) == Role.OWNER
    # The two forms post here; the group form's fields carry its prefix.
    posted_group = request.method == "POST" and "group-group" in request.POST
    form = MemberForm(
        request.POST if request.method == "POST" and not posted_group else None,
        knowledge_base=kb,
    )
    group_form = GroupMemberForm(request.POST if posted_group else None, prefix="group")
    if request.method == "POST":
        if not is_owner:
            raise PermissionDenied(_("Only the owners of this knowledge base can do this."))
        if posted_group and group_form.is_valid():
            group, role = group_form.cleaned_data["group"], group_form.cleaned_data["role"]
            with transaction.atomic():
                audit_role_grant(request=request, knowledge_base=kb, grantee=group, role=role)
                GroupMembership.objects.update_or_create(
                    knowledge_base=kb, group=group, defaults={"role": role}
                )
            messages.success(
                request,
                _("Members of %(group)s can now use this knowledge base as %(role)s.")
                % {"group": group.name, "role": Role(role).label},
            )
            return redirect("kb_members", pk=kb.pk)
        if not posted_group and form.is_valid():
            user, role = form.cleaned_data["user"], form.cleaned_data["role"]
            with transaction.atomic():
                audit_role_grant(request=request, knowledge_base=kb, grantee=user, role=role)
                Membership.objects.update_or_create(
                    knowledge_base=kb, user=user, defaults={"role": role}
                )
            messages.success(
                request,
                _("%(user)s can now use this knowledge base as %(role)s.")
                % {
                    "user": form.cleaned_data["username"],
                    "role": Role(form.cleaned_data["role"]).label,
                },
            )
            return redirect("kb_members", pk=kb.pk)
    members = kb.memberships.select_related("user").order_by("user__username")
    groups = kb.group_memberships.select_related("group").order_by("group__name")
    return render(
        request,
        "ingestion/kb_members.html",
        {
            "kb": kb,
            "form": form,
            "group_form": group_form,
            "members": members,
            "groups": groups,
            "is_owner": is_owner,
        },
    )


@login_required
@require_POST
def kb_member_remove(request, pk: int, member_pk: int):
    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    membership = get_object_or_404(Membership, pk=member_pk, knowledge_base=kb)
    grants_remove(request=request, knowledge_base=kb, grants=kb.memberships.filter(pk=member_pk))
    messages.success(request, _("%(user)s removed.") % {"user": membership.user.username})
    return redirect("kb_members", pk=kb.pk)


@login_required
@require_POST
def kb_group_remove(request, pk: int, grant_pk: int):
    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    grant = get_object_or_404(GroupMembership, pk=grant_pk, knowledge_base=kb)
    grants_remove(
        request=request, knowledge_base=kb, grants=kb.group_memberships.filter(pk=grant_pk)
    )
    messages.success(request, _("Group %(group)s removed.") % {"group": grant.group.name})
    return redirect("kb_members", pk=kb.pk)


@login_required
@require_POST
def kb_thresholds(request, pk: int):
    """Save the cut-offs tried on the hit-testing page as this knowledge base's own."""
    kb = knowledge_base_get(user=request.user, pk=pk, owner=True)
    form = ThresholdForm(request.POST, instance=kb)
    if form.is_valid():
        with transaction.atomic():
            form.save()
            audit_settings(request=request, knowledge_base=kb, changes=form_changes(form))
            enqueue_regression(knowledge_base=kb, trigger="settings", changed=form.changed_data)
        messages.success(request, _("Thresholds saved."))
    else:
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, error)
    return _redirect_back(request, redirect("hit_test", pk=kb.pk))


# --- review of contributions (ingestion.review) --------------------------------------------


@login_required
@require_GET
def kb_review(request, pk: int):
    """The review queue: contributions waiting for an editor or owner (404 for others)."""
    kb = knowledge_base_get(user=request.user, pk=pk, write=True)
    return render(
        request,
        "ingestion/review_queue.html",
        {
            "kb": kb,
            "documents": pending_documents(knowledge_base=kb, reviewer=request.user),
            "is_owner": kb.role_of(request.user) == Role.OWNER,
        },
    )


@login_required
@require_POST
def document_approve_view(request, pk: int):
    # write=True: only the knowledge base's editors and owners review (others get 404).
    document = document_get(user=request.user, pk=pk, write=True)
    try:
        with transaction.atomic():
            document = document_approve(document=document, reviewer=request.user)
            audit_record(request=request, action="document.approve", obj=document)
    except ReviewError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, _("%(name)s is approved and queued.") % {"name": document.original_name}
        )
    return redirect("kb_review", pk=document.knowledge_base_id)


@login_required
@require_POST
def document_reject_view(request, pk: int):
    document = document_get(user=request.user, pk=pk, write=True)
    reason = request.POST.get("reason", "")
    try:
        with transaction.atomic():
            document = document_reject(document=document, reviewer=request.user, reason=reason)
            audit_record(
                request=request,
                action="document.reject",
                obj=document,
                details={"reason": document.review_reason},
            )
    except ReviewError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("%(name)s is rejected.") % {"name": document.original_name})
    return redirect("kb_review", pk=document.knowledge_base_id)
