"""FAQ entries, knowledge gaps, saved retrieval test cases and their regression runs, and
share links (assistants published to people without an account)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.expressions import RawSQL
from django.utils.translation import gettext_lazy as _
from pgvector.django import VectorField


class FaqEntry(models.Model):
    """An owner's answer to a question. A user question that matches `question` above the
    calibrated similarity gets `answer` directly (chat mode "faq"); below it the entry is an
    ordinary passage for recall, through its backing chunk."""

    knowledge_base = models.ForeignKey(
        "ingestion.KnowledgeBase", on_delete=models.CASCADE, related_name="faq_entries"
    )
    question = models.TextField()
    answer = models.TextField()
    # The recall passage ("question\nanswer") in the knowledge base's FAQ document.
    chunk = models.OneToOneField(
        "ingestion.Chunk",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="faq_entry",
    )
    # The question's vector under `embedder`, for the direct match.
    embedder = models.CharField(max_length=64, blank=True)
    embedding = models.JSONField(default=list, blank=True)
    # The same vector as a pgvector value, kept by the database from `embedding` whatever
    # writes it: the match compares vectors in SQL instead of loading every entry's JSON
    # into Python for each question (faq_match).
    vector = models.GeneratedField(
        expression=RawSQL(
            "CASE WHEN jsonb_array_length(embedding) > 0 THEN (embedding::text)::vector END", ()
        ),
        output_field=VectorField(null=True),
        db_persist=True,
    )
    language = models.CharField(max_length=16, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The chat answer this entry corrects, when it was saved from one.
    source_message = models.ForeignKey(
        "chat.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    hits = models.PositiveIntegerField(default=0)
    last_hit_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.question[:80]


class GapStatus(models.TextChoices):
    OPEN = "open", _("Open")
    ANSWERED = "answered", _("Answer written")
    DOCUMENT_ADDED = "document_added", _("Document uploaded")
    OUT_OF_SCOPE = "out_of_scope", _("Out of scope")


class Gap(models.Model):
    """Questions of one meaning that the knowledge base did not answer well."""

    Status = GapStatus

    knowledge_base = models.ForeignKey(
        "ingestion.KnowledgeBase", on_delete=models.CASCADE, related_name="gaps"
    )
    label = models.TextField(help_text="the representative question")
    language = models.CharField(max_length=16, blank=True)
    status = models.CharField(max_length=16, choices=GapStatus.choices, default=GapStatus.OPEN)
    embedder = models.CharField(max_length=64, blank=True)
    centroid = models.JSONField(default=list, blank=True)
    faq_entry = models.ForeignKey(
        FaqEntry, on_delete=models.SET_NULL, null=True, blank=True, related_name="gaps"
    )
    document = models.ForeignKey(
        "ingestion.Document", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    action_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    action_at = models.DateTimeField(null=True, blank=True)
    # After an action: how the gap's questions fare when asked again ({"asked", "answered"}).
    recheck = models.JSONField(default=dict, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-last_seen", "-id"]

    def __str__(self) -> str:
        return self.label[:80]


class GapQuestion(models.Model):
    class Reason(models.TextChoices):
        ABSTAINED = "abstained", _("Not in the documents")
        THUMBS_DOWN = "thumbs_down", _("Marked unhelpful")
        WEAK = "weak", _("Weakly supported")

    gap = models.ForeignKey(Gap, on_delete=models.CASCADE, related_name="questions")
    # The assistant message that answered (or failed to answer) the question.
    message = models.OneToOneField(
        "chat.Message", on_delete=models.CASCADE, related_name="gap_question"
    )
    question = models.TextField()
    reason = models.CharField(max_length=16, choices=Reason.choices)
    embedding = models.JSONField(default=list, blank=True)
    asked_at = models.DateTimeField()

    class Meta:
        ordering = ["-asked_at", "-id"]

    def __str__(self) -> str:
        return self.question[:80]


class SavedCase(models.Model):
    """A hit-testing query saved with the passages the owner marked correct: one case of the
    knowledge base's regression suite. Passages are kept by document and text as well as by
    id, so a case survives re-ingestion (which gives chunks new ids)."""

    knowledge_base = models.ForeignKey(
        "ingestion.KnowledgeBase", on_delete=models.CASCADE, related_name="saved_cases"
    )
    query = models.TextField()
    # [{"chunk_id", "document_id", "text", "page"}]
    relevant = models.JSONField(default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.query[:80]


class RegressionRun(models.Model):
    class Trigger(models.TextChoices):
        MANUAL = "manual", _("On demand")
        INGESTION = "ingestion", _("Re-ingestion")
        CHUNK_EDIT = "chunk_edit", _("Chunk edit")
        RERANKER = "reranker", _("Reranker adaptation")
        SETTINGS = "settings", _("Settings change")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    knowledge_base = models.ForeignKey(
        "ingestion.KnowledgeBase", on_delete=models.CASCADE, related_name="regression_runs"
    )
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.MANUAL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # {"ndcg@10", "recall@10", "cases", ...}
    metrics = models.JSONField(default=dict, blank=True)
    # Per case: {"case", "query", "ndcg@10", "recall@10", "ranking": [...]}
    results = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"regression run #{self.pk} of {self.knowledge_base_id} ({self.status})"


class ShareLink(models.Model):
    """An assistant published over knowledge bases: a full-page chat at /s/<token>/ and an
    embeddable widget. Revoking sets `revoked_at`; its conversations are kept."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="share_links"
    )
    knowledge_bases = models.ManyToManyField("ingestion.KnowledgeBase", related_name="share_links")
    token = models.CharField(max_length=64, unique=True)
    title = models.CharField(max_length=200)
    welcome_message = models.TextField(blank=True)
    suggested_questions = models.JSONField(default=list, blank=True)
    login_required = models.BooleanField(default=False)
    # Origins (scheme://host[:port]) allowed to embed the widget.
    allowed_origins = models.JSONField(default=list, blank=True)
    rate_limit_per_hour = models.PositiveIntegerField(default=30)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.title

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
