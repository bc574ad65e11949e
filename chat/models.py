"""Conversations, their messages (with sources, timings, usage) and feedback."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Conversation(models.Model):
    # None for a visitor of a share link without an account (then `visitor` names them).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="conversations",
        null=True,
        blank=True,
    )
    share_link = models.ForeignKey(
        "curation.ShareLink",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="conversations",
    )
    visitor = models.CharField(max_length=64, blank=True, db_index=True)
    title = models.CharField(max_length=200, blank=True)
    knowledge_bases = models.ManyToManyField("ingestion.KnowledgeBase", related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Mode(models.TextChoices):
    GENERATED = "generated", _("Generated")
    EXTRACTIVE = "extractive", _("Extract")
    ABSTAINED = "abstained", _("Not in the documents")
    ERROR = "error", _("Error")
    # The user stopped the answer (or went away): what was streamed and its sources are kept.
    STOPPED = "stopped", _("Stopped")
    # The question matched an owner's FAQ entry: its stored answer, the entry as the source.
    FAQ = "faq", _("FAQ answer")


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", _("User")
        ASSISTANT = "assistant", _("Assistant")

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    # For assistant messages:
    question = models.TextField(blank=True, help_text="the user's question as asked")
    standalone_question = models.TextField(blank=True, help_text="rewritten with the history")
    mode = models.CharField(max_length=16, choices=Mode.choices, blank=True)
    sources = models.JSONField(default=list, blank=True)
    unverified = models.JSONField(default=list, blank=True, help_text="sentences without support")
    omitted_passages = models.PositiveIntegerField(default=0)
    # The abstention decision: probability, threshold (and where it came from), signals.
    abstention = models.JSONField(default=dict, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    usage = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"


class Feedback(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="feedback")
    # None for a visitor of a share link without an account (then `visitor` names them,
    # as on their conversation).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True
    )
    visitor = models.CharField(max_length=64, blank=True)
    rating = models.SmallIntegerField(choices=[(1, "👍"), (-1, "👎")])
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "user"], name="one_feedback_per_user"),
            models.UniqueConstraint(
                fields=["message", "visitor"],
                condition=models.Q(user__isnull=True),
                name="one_feedback_per_visitor",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rating:+d} on {self.message_id}"
