"""Changing a conversation's history: cut it back to a question so that the question can be
asked again (regenerate) or replaced (edit and resend)."""

from __future__ import annotations

from django.db import transaction

from chat.models import Conversation, Message


def _question_of(*, conversation: Conversation, message: Message) -> Message | None:
    """The user message an answer replies to: the last user message before it."""
    if message.role == Message.Role.USER:
        return message
    earlier = [
        m
        for m in conversation.messages.filter(role=Message.Role.USER)
        if (m.created_at, m.pk) < (message.created_at, message.pk)
    ]
    return earlier[-1] if earlier else None


@transaction.atomic
def conversation_truncate(*, conversation: Conversation, message: Message) -> str:
    """Delete the user message `message` (or the question that the answer `message` replies
    to) and everything after it, with its feedback; return that question's text.

    The caller then asks the question again through the normal pipeline, which appends a
    fresh question and answer, so a regenerated answer never sits beside its predecessor
    in the history the model reads."""
    if message.conversation_id != conversation.pk:
        raise ValueError("the message belongs to another conversation")
    question = _question_of(conversation=conversation, message=message)
    if question is None:  # an answer without a question (cannot happen through the UI)
        start, text = message, message.question
    else:
        start, text = question, question.content
    ordered = list(conversation.messages.values_list("pk", "created_at"))
    cut = (start.created_at, start.pk)
    doomed = [pk for pk, created in ordered if (created, pk) >= cut]
    conversation.messages.filter(pk__in=doomed).delete()
    conversation.save(update_fields=["updated_at"])
    return text
