"""Knowledge bases, their documents and the chunks retrieval searches.

The ingestion app owns these tables and all writes to them; retrieval and chat read them
through the selectors in `ingestion.selectors`, which scope every query by permission.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower
from django.utils.translation import gettext_lazy as _
from pgvector.django import VectorField


def _default_embedders() -> list[str]:
    return list(settings.RAG_DEFAULT_EMBEDDERS)


class Role(models.TextChoices):
    OWNER = "owner", _("Owner")
    EDITOR = "editor", _("Editor")
    # Uploads, which wait for an editor's or owner's review when the knowledge base asks for it.
    CONTRIBUTOR = "contributor", _("Contributor")
    VIEWER = "viewer", _("Viewer")


class ReviewStatus(models.TextChoices):
    APPROVED = "approved", _("Approved")
    PENDING = "pending", _("Waiting for review")
    REJECTED = "rejected", _("Rejected")


# Higher grants include the lower ones; a user's role is the highest of the grants that
# reach them (owner, their own membership, their groups' memberships).
ROLE_RANK = {Role.VIEWER: 1, Role.CONTRIBUTOR: 2, Role.EDITOR: 3, Role.OWNER: 4}


def _granted(user, roles) -> Q:
    """A user's own membership or a membership of any of their groups, with one of `roles`.

    The groups are a subquery of this same SQL statement, read on every request: taking a
    user out of a group takes effect on their next request, with nothing cached.
    """
    return Q(memberships__user=user, memberships__role__in=roles) | Q(
        group_memberships__group__in=user.groups.all(), group_memberships__role__in=roles
    )


class KnowledgeBaseQuerySet(models.QuerySet):
    def readable_by(self, user) -> KnowledgeBaseQuerySet:
        if not user.is_authenticated:
            return self.none()
        return self.filter(Q(owner=user) | _granted(user, Role.values)).distinct()

    def uploadable_by(self, user) -> KnowledgeBaseQuerySet:
        """Where the user may add documents: editors and owners, and contributors (whose
        uploads wait for review when the knowledge base requires it)."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(
            Q(owner=user) | _granted(user, [Role.OWNER, Role.EDITOR, Role.CONTRIBUTOR])
        ).distinct()

    def editable_by(self, user) -> KnowledgeBaseQuerySet:
        if not user.is_authenticated:
            return self.none()
        return self.filter(Q(owner=user) | _granted(user, [Role.OWNER, Role.EDITOR])).distinct()

    def owned_by(self, user) -> KnowledgeBaseQuerySet:
        if not user.is_authenticated:
            return self.none()
        return self.filter(Q(owner=user) | _granted(user, [Role.OWNER])).distinct()


class KnowledgeBase(models.Model):
    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_knowledge_bases"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Retrieval settings; None means "use the site default from settings.RAG_*".
    embedders = ArrayField(
        models.CharField(max_length=64),
        default=_default_embedders,
        help_text="Names from RAG_EMBEDDERS; changing them requires manage.py reembed.",
    )
    chunk_tokens = models.PositiveIntegerField(null=True, blank=True)
    chunk_overlap_tokens = models.PositiveIntegerField(null=True, blank=True)
    parent_chunk_tokens = models.PositiveIntegerField(null=True, blank=True)
    recall_k = models.PositiveIntegerField(null=True, blank=True)
    reranker = models.CharField(max_length=128, blank=True)
    rerank_top_k = models.PositiveIntegerField(null=True, blank=True)
    rerank_min_score = models.FloatField(null=True, blank=True)
    rerank_max_drop = models.FloatField(null=True, blank=True)
    # Abstention (chat.abstention): the owner's threshold on the calibrated probability that
    # the documents answer a question, and the value calibrated from the QA pairs.
    abstain_threshold = models.FloatField(null=True, blank=True)
    abstain_calibrated = models.FloatField(null=True, blank=True)
    # Uploads by contributors wait for review (ReviewStatus.PENDING) until approved.
    require_review = models.BooleanField(default=False)
    llm_options = models.JSONField(
        default=dict, blank=True, help_text="Overrides: model, temperature, max_tokens."
    )
    # The latest retrieval evaluation on the owner's QA pairs (see retrieval.qa_eval).
    last_evaluation = models.JSONField(default=dict, blank=True)

    objects = KnowledgeBaseQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

    def setting(self, name: str):
        """This knowledge base's value of a RAG tunable, or the site default."""
        # Named one by one (read at call time, so test overrides apply) so that grepping
        # for a RAG_ setting finds every place that reads it.
        site_defaults = {
            "chunk_tokens": settings.RAG_CHUNK_TOKENS,
            "chunk_overlap_tokens": settings.RAG_CHUNK_OVERLAP_TOKENS,
            "parent_chunk_tokens": settings.RAG_PARENT_CHUNK_TOKENS,
            "recall_k": settings.RAG_RECALL_K,
            "reranker": settings.RAG_DEFAULT_RERANKER,
            "rerank_top_k": settings.RAG_RERANK_TOP_K,
            "rerank_min_score": settings.RAG_RERANK_MIN_SCORE,
            "rerank_max_drop": settings.RAG_RERANK_MAX_DROP,
        }
        value = getattr(self, name)
        if value is None or value == "":
            return site_defaults[name]
        return value

    def role_of(self, user) -> str | None:
        if not user.is_authenticated:
            return None
        if self.owner_id == user.pk:
            return Role.OWNER
        # One query: the user's own role and their groups' roles here; the highest wins.
        roles = (
            self.memberships.filter(user=user)
            .values_list("role", flat=True)
            .union(self.group_memberships.filter(group__user=user).values_list("role", flat=True))
        )
        return max(roles, key=lambda role: ROLE_RANK.get(role, 0), default=None)


class Membership(models.Model):
    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="kb_memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["knowledge_base", "user"], name="unique_kb_member")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.knowledge_base} ({self.role})"


class GroupMembership(models.Model):
    """A role given to every member of a (django.contrib.auth) group; staff manage the
    groups themselves, the knowledge base's owners give them roles here."""

    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="group_memberships"
    )
    group = models.ForeignKey("auth.Group", on_delete=models.CASCADE, related_name="kb_memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["knowledge_base", "group"], name="unique_kb_group")
        ]

    def __str__(self) -> str:
        return f"{self.group} in {self.knowledge_base} ({self.role})"


class DocumentStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    PARSING = "parsing", _("Parsing")
    EMBEDDING = "embedding", _("Embedding")
    READY = "ready", _("Ready")
    FAILED = "failed", _("Failed")


class Document(models.Model):
    Status = DocumentStatus

    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="documents"
    )
    file = models.FileField(upload_to="documents/%Y/%m/", max_length=500, blank=True)
    original_name = models.CharField(max_length=500)
    source_url = models.URLField(max_length=2000, blank=True)
    mime_type = models.CharField(max_length=200, blank=True)
    size = models.BigIntegerField(default=0)
    content_hash = models.CharField(max_length=64, db_index=True, help_text="sha256 of the file")
    status = models.CharField(
        max_length=16, choices=DocumentStatus.choices, default=DocumentStatus.QUEUED, db_index=True
    )
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    page_count = models.PositiveIntegerField(null=True, blank=True)
    language = models.CharField(max_length=16, blank=True)
    # Hash of the chunking/embedding configuration the current chunks were made with, so an
    # unchanged document is not re-embedded on a retry that already finished.
    ingest_signature = models.CharField(max_length=64, blank=True)
    stats = models.JSONField(default=dict, blank=True)
    # The claim of the run that processes it: the Celery task id it was queued with (or an
    # in-process run's token) and that run's last sign of life. A worker killed mid-way stops
    # beating; the stale-claim sweep (services.documents_requeue_stale) then queues the
    # document again instead of waiting hours for the broker's visibility timeout.
    task_id = models.CharField(max_length=64, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    interruptions = models.PositiveSmallIntegerField(
        default=0, help_text="times its worker died mid-way since it was last queued"
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="uploaded_documents",
    )
    # Visibility: a restricted document is seen only by these users and groups (among the
    # knowledge base's members) and by its owners; enforced inside recall SQL
    # (ingestion.selectors.document_scope) and by every selector of documents.
    restricted = models.BooleanField(default=False)
    visible_to_users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="visible_documents"
    )
    visible_to_groups = models.ManyToManyField(
        "auth.Group", blank=True, related_name="visible_documents"
    )
    # Metadata: tags and key-value pairs (text, number or ISO date strings), filterable
    # inside recall ({"tags": [...], "meta": {"year": {"gte": 2020}}}).
    tags = ArrayField(models.CharField(max_length=100), default=list, blank=True)
    meta = models.JSONField(default=dict, blank=True)
    # Review: documents from contributors wait until an editor or owner approves them; only
    # approved documents are indexed and visible.
    review_status = models.CharField(
        max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.APPROVED, db_index=True
    )
    review_reason = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="reviewed_documents",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["knowledge_base", "content_hash"], name="unique_content_per_kb"
            )
        ]
        indexes = [
            GinIndex(fields=["tags"], name="document_tags_gin"),
            GinIndex(fields=["meta"], name="document_meta_gin"),
            # The documents list (ingestion.document_list) a page at a time in its default
            # order (newest first) and by name: read in index order, stopped at the page,
            # instead of sorting a knowledge base's ten thousand documents per request.
            models.Index(
                fields=["knowledge_base", "-created_at", "-id"], name="document_kb_created"
            ),
            models.Index(
                F("knowledge_base"), Lower("original_name"), F("id"), name="document_kb_name"
            ),
        ]

    def __str__(self) -> str:
        return self.original_name

    @property
    def extension(self) -> str:
        name = self.original_name.lower()
        return name.rsplit(".", 1)[-1] if "." in name else ""


class ChunkKind(models.TextChoices):
    TEXT = "text", _("Text")
    TITLE = "title", _("Title")
    LIST = "list", _("List")
    TABLE = "table", _("Table")
    CODE = "code", _("Code")
    # A table-of-contents or index page (ingestion.contents): kept out of the first places.
    TOC = "toc", _("Contents or index")
    # An owner's FAQ entry (curation.FaqEntry) as a recall passage.
    FAQ = "faq", _("FAQ entry")


class ChunkQuerySet(models.QuerySet):
    def in_knowledge_bases(self, knowledge_bases) -> ChunkQuerySet:
        return self.filter(knowledge_base__in=knowledge_bases)

    def searchable(self) -> ChunkQuerySet:
        """Recall units: the small chunks (parents only give context)."""
        return self.filter(is_parent=False)


class Chunk(models.Model):
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    # Denormalised so that scoped search never needs a join through documents.
    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="chunks"
    )
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    token_count = models.PositiveIntegerField(default=0)
    heading_path = models.TextField(blank=True)
    page = models.PositiveIntegerField(null=True, blank=True)
    page_end = models.PositiveIntegerField(null=True, blank=True)
    sheet = models.CharField(max_length=200, blank=True)
    slide = models.PositiveIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=16, choices=ChunkKind.choices, default=ChunkKind.TEXT)
    language = models.CharField(max_length=16, blank=True)
    is_parent = models.BooleanField(default=False)
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="children"
    )
    # Whitespace-separated jieba tokens (PostgreSQL does not segment Chinese) and the
    # tsvector built from them.
    search_text = models.TextField(blank=True)
    search_vector = SearchVectorField(null=True)
    search_length = models.PositiveIntegerField(default=0, help_text="tokens, for BM25")
    # Chunk management (ingestion.chunk_editing): a disabled chunk is never recalled; the
    # questions (or keywords) an editor attaches are embedded and indexed with the text so
    # that recall also matches them; `edited` marks a chunk an editor changed or added, whose
    # edits a re-ingest would replace. Database defaults too: bulk loaders that COPY rows
    # (bench_search) name only the older columns.
    enabled = models.BooleanField(default=True, db_default=True)
    questions = ArrayField(models.TextField(), default=list, db_default="{}", blank=True)
    edited = models.BooleanField(default=False, db_default=False)

    objects = ChunkQuerySet.as_manager()

    class Meta:
        ordering = ["document_id", "ordinal"]
        indexes = [
            GinIndex(fields=["search_vector"], name="chunk_search_gin"),
            models.Index(fields=["knowledge_base", "is_parent"], name="chunk_kb_parent"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["document", "ordinal"], name="unique_chunk_ordinal")
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"

    @property
    def embed_text(self) -> str:
        """What the embedder reads: the heading path gives a short chunk its context, and the
        attached questions (one per line) let recall match them too."""
        parts = [self.heading_path] if self.heading_path else []
        parts.append(self.text)
        parts += [q for q in self.questions or [] if q.strip()]
        return "\n".join(parts)


class ChunkEmbedding(models.Model):
    """One vector per chunk and embedder.

    Vectors of different dimensions share this table through an untyped `vector` column;
    each embedder gets a partial HNSW index on `embedding::vector(DIM)` (see
    ingestion.vector_indexes), which pgvector documents for this case.
    """

    chunk = models.ForeignKey(Chunk, on_delete=models.CASCADE, related_name="embeddings")
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+")
    embedder = models.CharField(max_length=64)
    embedding = VectorField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chunk", "embedder"], name="unique_chunk_embedder")
        ]
        indexes = [models.Index(fields=["embedder", "knowledge_base"], name="chunkemb_emb_kb")]

    def __str__(self) -> str:
        return f"{self.chunk_id}:{self.embedder}"


class QAPair(models.Model):
    """A question and the document that answers it, uploaded by an owner (CSV): used to
    evaluate retrieval on the knowledge base's own material and to train its reranker."""

    knowledge_base = models.ForeignKey(
        KnowledgeBase, on_delete=models.CASCADE, related_name="qa_pairs"
    )
    question = models.TextField()
    document = models.ForeignKey(
        Document, on_delete=models.SET_NULL, null=True, blank=True, related_name="qa_pairs"
    )
    document_name = models.CharField(max_length=500, help_text="as written in the CSV")
    answer = models.TextField(blank=True, help_text="optional expected answer text")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.question[:80]
