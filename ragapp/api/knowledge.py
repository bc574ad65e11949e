"""Knowledge bases, members and documents."""

from __future__ import annotations

from dataclasses import asdict

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Count
from ninja import File, Form, Query, Router, Status
from ninja.errors import HttpError
from ninja.files import UploadedFile
from ninja.pagination import LimitOffsetPagination, paginate

from curation.tasks import enqueue_regression
from ingestion.chunk_editing import manual_edits
from ingestion.document_list import (
    BulkRejected,
    InvalidListQuery,
    clean_ids,
    documents_bulk,
    documents_listed,
    knowledge_bases_named,
    list_query_from,
    with_chunk_counts,
)
from ingestion.documents import (
    InvalidMetadata,
    automatic_fields,
    clean_meta,
    clean_tags,
    document_set_metadata,
)
from ingestion.models import (
    Document,
    DocumentStatus,
    GroupMembership,
    KnowledgeBase,
    Membership,
    ReviewStatus,
    Role,
)
from ingestion.review import InvalidReason, ReviewError, document_approve, document_reject
from ingestion.selectors import (
    QueuePlace,
    document_get,
    knowledge_base_get,
    knowledge_bases_for,
    queue_positions,
    visible_condition,
)
from ingestion.services import (
    UploadRejected,
    delete_refusal,
    document_create_from_url,
    document_delete,
    document_enqueue,
    document_set_visibility,
    documents_upload,
    knowledge_base_delete,
    reingest_refusal,
)
from ingestion.visibility import InvalidVisibility, visibility_from, visibility_out
from ragapp.api.schemas import (
    DocumentOut,
    DocumentPatch,
    DocumentsBulkIn,
    DocumentsBulkOut,
    KnowledgeBaseIn,
    KnowledgeBaseOut,
    KnowledgeBasePatch,
    MemberIn,
    MemberOut,
    RejectIn,
    UploadOut,
    UrlIn,
)
from ragapp.audit import (
    audit_record,
    audit_role_grant,
    audit_settings,
    field_changes,
    grants_remove,
)

router = Router(tags=["knowledge bases"])


def kb_out(kb: KnowledgeBase, user) -> dict:
    return {
        "id": kb.pk,
        "name": kb.name,
        "description": kb.description,
        "owner": kb.owner.username,
        "role": kb.role_of(user) or "",
        "embedders": list(kb.embedders),
        "abstain_threshold": kb.abstain_threshold,
        "abstain_calibrated": kb.abstain_calibrated,
        "require_review": kb.require_review,
        "documents": kb.n_documents if hasattr(kb, "n_documents") else kb.documents.count(),
        "created_at": kb.created_at,
        "updated_at": kb.updated_at,
    }


def doc_out(d: Document, queue: dict[int, QueuePlace] | None = None) -> dict:
    """`queue`: queue_positions() of the documents shown; computed here for one document."""
    if queue is None:
        queue = queue_positions(document_ids=[d.pk] if d.status == DocumentStatus.QUEUED else [])
    place = queue.get(d.pk)
    return {
        "id": d.pk,
        "knowledge_base": d.knowledge_base_id,
        "name": d.original_name,
        "status": d.status,
        "progress": d.progress,
        "error": d.error,
        "mime_type": d.mime_type,
        "size": d.size,
        "pages": d.page_count,
        "language": d.language,
        "source_url": d.source_url,
        "tags": list(d.tags),
        "meta": d.meta,
        "chunks": getattr(d, "n_chunks", None),
        # Re-ingesting replaces these (chunk management): clients warn before it.
        "manual_edits": manual_edits(document=d, edited=getattr(d, "n_edited", None)),
        "queue_position": place.position if place else None,
        "eta_seconds": place.eta_seconds if place else None,
        "review_status": d.review_status,
        "review_reason": d.review_reason,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
    }


@router.get("/knowledge-bases", response=list[KnowledgeBaseOut])
def list_knowledge_bases(request, q: str | None = Query(None, description="part of the name")):
    kbs = knowledge_bases_named(knowledge_bases_for(user=request.user), q).select_related("owner")
    # Only the documents this user may see are counted (restricted ones and others'
    # contributions waiting for review are not), as on the web page.
    visible = visible_condition(user=request.user, prefix="documents__")
    kbs = kbs.annotate(n_documents=Count("documents", filter=visible, distinct=True))
    return [kb_out(kb, request.user) for kb in kbs]


@router.post("/knowledge-bases", response={201: KnowledgeBaseOut})
def create_knowledge_base(request, payload: KnowledgeBaseIn):
    kb = KnowledgeBase.objects.create(
        owner=request.user, name=payload.name, description=payload.description
    )
    return Status(201, kb_out(kb, request.user))


@router.get("/knowledge-bases/{int:kb_id}", response=KnowledgeBaseOut)
def get_knowledge_base(request, kb_id: int):
    return kb_out(knowledge_base_get(user=request.user, pk=kb_id), request.user)


@router.patch("/knowledge-bases/{int:kb_id}", response=KnowledgeBaseOut)
def update_knowledge_base(request, kb_id: int, payload: KnowledgeBasePatch):
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    changes = payload.dict(exclude_unset=True)
    if (
        "reranker" in changes
        and changes["reranker"]
        and changes["reranker"] not in settings.RAG_RERANKERS
    ):
        raise HttpError(400, f"unknown reranker {changes['reranker']!r}")
    before = {field: getattr(kb, field) for field in changes}
    for field, value in changes.items():
        # null leaves the not-null fields as they are
        keep = value is None and field in ("name", "require_review")
        setattr(kb, field, getattr(kb, field) if keep else value)
    with transaction.atomic():
        kb.save()
        changed = field_changes(before, kb)
        audit_settings(request=request, knowledge_base=kb, changes=changed)
        enqueue_regression(knowledge_base=kb, trigger="settings", changed=changed)
    return kb_out(kb, request.user)


@router.delete("/knowledge-bases/{int:kb_id}", response={204: None})
def delete_knowledge_base(request, kb_id: int):
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    with transaction.atomic():
        audit_record(request=request, action="knowledge_base.delete", obj=kb, knowledge_base=kb)
        knowledge_base_delete(knowledge_base=kb)
    return Status(204, None)


@router.get("/knowledge-bases/{int:kb_id}/members", response=list[MemberOut], exclude_none=True)
def list_members(request, kb_id: int):
    """The owner and the users ({"username", "role"}), then the groups ({"group", "role"})."""
    kb = knowledge_base_get(user=request.user, pk=kb_id)
    members = [{"username": kb.owner.username, "role": Role.OWNER}]
    members += [
        {"username": m.user.username, "role": m.role}
        for m in kb.memberships.select_related("user").order_by("user__username")
    ]
    members += [
        {"group": g.group.name, "role": g.role}
        for g in kb.group_memberships.select_related("group").order_by("group__name")
    ]
    return members


@router.post("/knowledge-bases/{int:kb_id}/members", response={201: MemberOut}, exclude_none=True)
def add_member(request, kb_id: int, payload: MemberIn):
    """Give a user ({"username", "role"}) or every member of a group ({"group", "role"}) a
    role; giving it again changes it."""
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    if payload.group is not None:
        group = Group.objects.filter(name=payload.group).first()
        if group is None:
            raise HttpError(400, f"no group named {payload.group!r}")
        with transaction.atomic():
            audit_role_grant(request=request, knowledge_base=kb, grantee=group, role=payload.role)
            GroupMembership.objects.update_or_create(
                knowledge_base=kb, group=group, defaults={"role": payload.role}
            )
        return Status(201, {"group": group.name, "role": payload.role})
    user = get_user_model().objects.filter(username=payload.username, is_active=True).first()
    if user is None:
        raise HttpError(400, f"no user named {payload.username!r}")
    if user == kb.owner:
        raise HttpError(409, "that user owns this knowledge base")
    with transaction.atomic():
        audit_role_grant(request=request, knowledge_base=kb, grantee=user, role=payload.role)
        Membership.objects.update_or_create(
            knowledge_base=kb, user=user, defaults={"role": payload.role}
        )
    return Status(201, {"username": user.username, "role": payload.role})


@router.delete("/knowledge-bases/{int:kb_id}/members/{username}", response={204: None})
def remove_member(request, kb_id: int, username: str):
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    if "\x00" in username:
        raise HttpError(404, "no such member")
    grants = kb.memberships.filter(user__username=username)
    if not grants_remove(request=request, knowledge_base=kb, grants=grants):
        raise HttpError(404, "no such member")
    return Status(204, None)


@router.delete("/knowledge-bases/{int:kb_id}/groups/{name}", response={204: None})
def remove_group(request, kb_id: int, name: str):
    """Take a group's role away (its members keep any role of their own)."""
    kb = knowledge_base_get(user=request.user, pk=kb_id, owner=True)
    if "\x00" in name:
        raise HttpError(404, "no such group")
    grants = kb.group_memberships.filter(group__name=name)
    if not grants_remove(request=request, knowledge_base=kb, grants=grants):
        raise HttpError(404, "no such group")
    return Status(204, None)


@router.post(
    "/knowledge-bases/{int:kb_id}/documents", response={201: UploadOut, 413: dict, 415: dict}
)
def upload_documents(
    request,
    kb_id: int,
    files: list[UploadedFile] = File(...),  # noqa: B008
    visible_to: str | None = Form(None),  # noqa: B008
    tags: str | None = Form(None),  # noqa: B008
    meta: str | None = Form(None),  # noqa: B008
):
    """Upload one or many files (multipart, field `files`); `visible_to` (JSON
    {"users": [...], "groups": [...]}) restricts them to these members and the owners."""
    kb = knowledge_base_get(user=request.user, pk=kb_id, upload=True)
    try:
        visibility = visibility_from(knowledge_base=kb, value=visible_to)
    except InvalidVisibility as exc:
        raise HttpError(422, str(exc)) from exc
    try:  # `tags`: comma-separated; `meta`: a JSON object
        tags, meta = clean_tags(tags), clean_meta(meta)
    except InvalidMetadata as exc:
        raise HttpError(422, str(exc)) from exc
    if len(files) > settings.RAG_MAX_FILES_PER_UPLOAD:
        raise HttpError(413, f"at most {settings.RAG_MAX_FILES_PER_UPLOAD} files per upload")
    outcomes = documents_upload(
        knowledge_base=kb,
        files=((upload.name, upload) for upload in files),
        uploaded_by=request.user,
        request=request,
        visible_to=visibility,
        tags=tags,
        meta=meta,
    )
    accepted = [doc_out(o.document) for o in outcomes if o.accepted]
    refused = [
        {"name": o.name, "error": o.error, "reason": o.reason} for o in outcomes if not o.accepted
    ]
    # Every file refused for one reason: that reason's status, not a 201 with nothing in it.
    reasons = {o.reason for o in outcomes}
    if outcomes and reasons == {"too_large"}:
        raise HttpError(413, refused[0]["error"])
    if outcomes and reasons == {"unsupported"}:
        raise HttpError(415, refused[0]["error"])
    return Status(201, {"accepted": accepted, "refused": refused})


@router.post("/knowledge-bases/{int:kb_id}/documents/url", response={201: DocumentOut})
def add_url(request, kb_id: int, payload: UrlIn):
    kb = knowledge_base_get(user=request.user, pk=kb_id, upload=True)
    try:
        with transaction.atomic():
            document = document_create_from_url(
                knowledge_base=kb, url=payload.url, uploaded_by=request.user
            )
            audit_record(request=request, action="document.upload", obj=document)
    except UploadRejected as exc:
        raise HttpError(422, str(exc)) from exc
    document.refresh_from_db()
    return Status(201, doc_out(document))


class DocumentPages(LimitOffsetPagination):
    """limit/offset over the filtered list; chunk counts and queue places are computed for
    the page's documents only (one grouped query), never for the whole knowledge base."""

    def paginate_queryset(self, queryset, pagination, request, **params):
        page = super().paginate_queryset(queryset, pagination, request, **params)
        docs = with_chunk_counts(page["items"])
        queue = {d.pk: d.queue_place for d in docs if d.queue_place}
        page["items"] = [doc_out(d, queue) for d in docs]
        return page


@router.get("/knowledge-bases/{int:kb_id}/documents", response=list[DocumentOut])
@paginate(DocumentPages)
def list_documents(
    request,
    kb_id: int,
    q: str | None = Query(None, description="part of the name, any case"),
    status: str | None = Query(
        None,
        description="queued, parsing, embedding, ready, failed, "
        "or pending / rejected (contributions)",
    ),
    type: str | None = Query(None, description="file extension, e.g. pdf"),
    sort: str | None = Query(
        None, description="name, date, size, status or pages; -name etc. descending (default -date)"
    ),
):
    kb = knowledge_base_get(user=request.user, pk=kb_id)
    try:
        query = list_query_from(q=q, status=status, type=type, sort=sort)
    except InvalidListQuery as exc:
        raise HttpError(400, str(exc)) from exc
    return documents_listed(user=request.user, knowledge_base=kb, query=query)


@router.post("/knowledge-bases/{int:kb_id}/documents/bulk", response=DocumentsBulkOut)
def bulk_documents(request, kb_id: int, payload: DocumentsBulkIn):
    """Re-ingest or delete many documents at once (editors and owners; 404 for others):
    one result per id, in the order given; ids that are not yours to change answer
    not_found, as on the single-document endpoints."""
    kb = knowledge_base_get(user=request.user, pk=kb_id, write=True)
    try:
        results = documents_bulk(
            user=request.user,
            knowledge_base=kb,
            action=payload.action,
            ids=clean_ids(payload.ids),
            request=request,
        )
    except BulkRejected as exc:
        raise HttpError(400, str(exc)) from exc
    done = sum(r.ok for r in results)
    return {
        "action": payload.action,
        "done": done,
        "failed": len(results) - done,
        "results": [asdict(r) for r in results],
    }


@router.get("/documents/{int:doc_id}", response=DocumentOut)
def get_document(request, doc_id: int):
    document = document_get(user=request.user, pk=doc_id)
    document.n_chunks = document.chunks.filter(is_parent=False).count()
    return {
        **doc_out(document),
        "visible_to": visibility_out(document),
        "fields": automatic_fields(document),
    }


@router.patch("/documents/{int:doc_id}", response=DocumentOut)
def update_document(request, doc_id: int, payload: DocumentPatch):
    """Editors and owners change a document's tags, meta and visible_to (omitted fields are
    left alone; visible_to null lifts the restriction)."""
    document = document_get(user=request.user, pk=doc_id, write=True)
    changes = payload.dict(exclude_unset=True)
    if changes.get("tags") is not None or changes.get("meta") is not None:
        try:
            with transaction.atomic():
                document_set_metadata(
                    document=document, tags=changes.get("tags"), meta=changes.get("meta")
                )
                audit_record(
                    request=request,
                    action="document.metadata",
                    obj=document,
                    details={"tags": document.tags, "meta": document.meta},
                )
        except InvalidMetadata as exc:
            raise HttpError(422, str(exc)) from exc
    if "visible_to" in changes:
        try:
            visibility = visibility_from(
                knowledge_base=document.knowledge_base, value=changes["visible_to"]
            )
        except InvalidVisibility as exc:
            raise HttpError(422, str(exc)) from exc
        with transaction.atomic():
            document_set_visibility(document=document, visible_to=visibility)
            audit_record(request=request, action="document.visibility", obj=document)
    document.n_chunks = document.chunks.filter(is_parent=False).count()
    return {
        **doc_out(document),
        "visible_to": visibility_out(document),
        "fields": automatic_fields(document),
    }


@router.delete("/documents/{int:doc_id}", response={204: None})
def delete_document(request, doc_id: int):
    document = document_get(user=request.user, pk=doc_id, write=True)
    refusal = delete_refusal(document=document)
    if refusal:
        raise HttpError(409, refusal)
    with transaction.atomic():
        audit_record(request=request, action="document.delete", obj=document)
        document_delete(document=document)
    return Status(204, None)


@router.post("/documents/{int:doc_id}/reingest", response={202: DocumentOut})
def reingest_document(request, doc_id: int):
    document = document_get(user=request.user, pk=doc_id, write=True)
    if document.review_status != ReviewStatus.APPROVED:
        raise HttpError(409, "the document is not approved: approve it to index it")
    refusal = reingest_refusal(document=document)
    if refusal:
        raise HttpError(409, refusal)
    with transaction.atomic():
        document_enqueue(document=document, force=True)
    document.refresh_from_db()
    return Status(202, doc_out(document))


@router.post("/documents/{int:doc_id}/approve", response=DocumentOut)
def approve_document(request, doc_id: int):
    """Approve a contribution waiting for review and queue it for ingestion (editors and
    owners; 404 for others, 409 when it is not waiting for review)."""
    document = document_get(user=request.user, pk=doc_id, write=True)
    try:
        with transaction.atomic():
            document = document_approve(document=document, reviewer=request.user)
            audit_record(request=request, action="document.approve", obj=document)
    except ReviewError as exc:
        raise HttpError(409, str(exc)) from exc
    return doc_out(document)


@router.post("/documents/{int:doc_id}/reject", response=DocumentOut)
def reject_document(request, doc_id: int, payload: RejectIn):
    """Reject a contribution waiting for review with a reason its uploader reads (editors
    and owners; 404 for others, 409 when it is not waiting for review)."""
    document = document_get(user=request.user, pk=doc_id, write=True)
    try:
        with transaction.atomic():
            document = document_reject(
                document=document, reviewer=request.user, reason=payload.reason
            )
            audit_record(
                request=request,
                action="document.reject",
                obj=document,
                details={"reason": document.review_reason},
            )
    except InvalidReason as exc:
        raise HttpError(422, str(exc)) from exc
    except ReviewError as exc:
        raise HttpError(409, str(exc)) from exc
    return doc_out(document)
