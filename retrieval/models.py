"""Trained second-stage models of a knowledge base (the retrieval app owns this table)."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class TrainingStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    TRAINING = "training", _("Training")
    READY = "ready", _("Ready")  # trained and better than the one in use: activated
    REJECTED = "rejected", _("Rejected")  # trained but not better on held-out queries
    FAILED = "failed", _("Failed")


class RerankerModelQuerySet(models.QuerySet):
    def active_for(self, knowledge_base_id: int):
        return self.filter(knowledge_base_id=knowledge_base_id, is_active=True).first()


class RerankerModel(models.Model):
    """One training run for one knowledge base and the model folder it wrote.

    Progress lives on the row so the UI can poll it; at most one row per knowledge base
    is active, and only a model that beat the one in use on held-out queries becomes so.
    """

    Status = TrainingStatus

    knowledge_base = models.ForeignKey(
        "ingestion.KnowledgeBase", on_delete=models.CASCADE, related_name="reranker_models"
    )
    path = models.CharField(max_length=500, blank=True, help_text="model folder (card.json)")
    base = models.CharField(max_length=300, blank=True, help_text="what training started from")
    status = models.CharField(
        max_length=16, choices=TrainingStatus.choices, default=TrainingStatus.QUEUED
    )
    progress = models.PositiveSmallIntegerField(default=0, help_text="percent")
    message = models.TextField(blank=True, help_text="current step, or why it failed")
    metrics = models.JSONField(default=dict, blank=True)
    card = models.JSONField(default=dict, blank=True)
    # What KnowledgeBase.reranker was before this model was activated: "switch back".
    previous_reranker = models.CharField(max_length=128, blank=True)
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RerankerModelQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["knowledge_base"],
                condition=models.Q(is_active=True),
                name="one_active_reranker_per_kb",
            )
        ]

    def __str__(self) -> str:
        return f"reranker #{self.pk} of {self.knowledge_base_id} ({self.status})"


class KeywordStats(models.Model):
    """BM25 collection statistics of one knowledge base: its searchable chunks (enabled, not
    parents) and their total token length. Kept by statement triggers on ingestion_chunk
    (migration 0002_keyword_statistics), so every write path (ingestion, chunk editing,
    deletes, bulk loads) updates it in the same transaction. No foreign key on purpose: a
    trigger firing while a knowledge base is deleted must not violate one."""

    knowledge_base_id = models.IntegerField(unique=True)
    chunks = models.BigIntegerField(default=0)
    total_length = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.chunks} chunks in knowledge base {self.knowledge_base_id}"


class LexemeStats(models.Model):
    """Document frequency of one lexeme in one knowledge base (chunks that contain it), and
    an upper bound of its term frequency in any chunk (never lowered on delete, so it stays
    a bound): what keyword_search needs for IDF and for its score bounds without counting."""

    knowledge_base_id = models.IntegerField()
    lexeme = models.TextField()
    df = models.BigIntegerField(default=0)
    max_tf = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["knowledge_base_id", "lexeme"], name="unique_kb_lexeme")
        ]

    def __str__(self) -> str:
        return f"{self.lexeme} in {self.df} chunks of knowledge base {self.knowledge_base_id}"
