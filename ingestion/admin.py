from django.contrib import admin, messages
from django.db import models, transaction
from django.db.models import Count, Q
from django.utils.translation import gettext_lazy as _

from ingestion.models import (
    Chunk,
    ChunkEmbedding,
    Document,
    DocumentStatus,
    GroupMembership,
    KnowledgeBase,
    Membership,
    QAPair,
)
from ingestion.services import (
    delete_refusal,
    document_delete,
    document_enqueue,
    documents_delete,
    reingest_refusal,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)


class GroupMembershipInline(admin.TabularInline):
    """Roles given to whole groups (Django's auth groups, edited under Authentication)."""

    model = GroupMembership
    extra = 0
    autocomplete_fields = ("group",)


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "n_documents", "n_failed", "created_at")
    list_filter = ("created_at",)
    search_fields = ("name", "description", "owner__username")
    autocomplete_fields = ("owner",)
    readonly_fields = ("created_at", "updated_at", "last_evaluation")
    inlines = [MembershipInline, GroupMembershipInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("owner")
            .annotate(
                _n_documents=Count("documents", distinct=True),
                _n_failed=Count(
                    "documents",
                    filter=Q(documents__status=DocumentStatus.FAILED),
                    distinct=True,
                ),
            )
        )

    @admin.display(description=_("Documents"), ordering="_n_documents")
    def n_documents(self, obj):
        return obj._n_documents

    @admin.display(description=_("Failed"), ordering="_n_failed")
    def n_failed(self, obj):
        return obj._n_failed


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("knowledge_base", "user", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("knowledge_base__name", "user__username")
    autocomplete_fields = ("knowledge_base", "user")
    list_select_related = ("knowledge_base", "user")


@admin.register(GroupMembership)
class GroupMembershipAdmin(admin.ModelAdmin):
    list_display = ("knowledge_base", "group", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("knowledge_base__name", "group__name")
    autocomplete_fields = ("knowledge_base", "group")
    list_select_related = ("knowledge_base", "group")


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("original_name", "knowledge_base", "status", "progress", "size", "updated_at")
    list_filter = ("status", "mime_type", "language", "created_at")
    search_fields = ("original_name", "source_url", "content_hash", "error")
    readonly_fields = (
        "content_hash",
        "ingest_signature",
        "size",
        "mime_type",
        "page_count",
        "progress",
        "stats",
        "created_at",
        "updated_at",
    )
    autocomplete_fields = ("knowledge_base", "uploaded_by")
    list_select_related = ("knowledge_base",)
    date_hierarchy = "created_at"
    actions = ["reingest"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def has_delete_permission(self, request, obj=None):
        # The FAQ document goes with its entries (FAQ page): its delete button is not shown.
        if obj is not None and delete_refusal(document=obj):
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(self, objs, request):
        # The bulk action skips the FAQ document (delete_queryset) instead of refusing the
        # whole selection for it: the confirmation lists what will really go.
        if hasattr(objs, "exclude"):
            objs = objs.exclude(pk__in=[o.pk for o in objs if delete_refusal(document=o)])
        return super().get_deleted_objects(objs, request)

    def delete_model(self, request, obj):
        document_delete(document=obj)  # the stored file too

    def delete_queryset(self, request, queryset):
        """The bulk action: the FAQ document is skipped with its reason, the rest deleted
        with their files."""
        deletable = []
        for document in queryset:
            refusal = delete_refusal(document=document)
            if refusal:
                messages.warning(request, f"{document.original_name}: {refusal}")
            else:
                deletable.append(document)
        documents_delete(documents=deletable)

    @admin.action(description=_("Re-ingest the selected documents"))
    def reingest(self, request, queryset):
        queued = 0
        with transaction.atomic():
            for document in queryset:
                refusal = reingest_refusal(document=document)
                if refusal:  # the FAQ document: skipped, with the reason
                    messages.warning(request, f"{document.original_name}: {refusal}")
                    continue
                document_enqueue(document=document, force=True)
                queued += 1
        messages.success(request, _("%(n)d document(s) queued.") % {"n": queued})


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ("__str__", "document", "ordinal", "page", "kind", "is_parent", "token_count")
    list_filter = ("kind", "is_parent", "language")
    search_fields = ("text", "heading_path", "document__original_name")
    raw_id_fields = ("document", "knowledge_base", "parent")
    readonly_fields = ("search_text", "search_vector", "search_length", "token_count")
    list_select_related = ("document",)


@admin.register(ChunkEmbedding)
class ChunkEmbeddingAdmin(admin.ModelAdmin):
    list_display = ("chunk", "embedder", "knowledge_base")
    list_filter = ("embedder",)
    search_fields = ("chunk__document__original_name",)
    raw_id_fields = ("chunk", "knowledge_base")
    readonly_fields = ("embedding",)


@admin.register(QAPair)
class QAPairAdmin(admin.ModelAdmin):
    list_display = ("question", "knowledge_base", "document_name", "created_at")
    list_filter = ("knowledge_base",)
    search_fields = ("question", "answer", "document_name")
    raw_id_fields = ("document", "created_by")
    autocomplete_fields = ("knowledge_base",)
