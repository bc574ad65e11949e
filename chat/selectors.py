from django.http import Http404

from chat.models import Conversation, Feedback, Message
from ingestion.selectors import visible_document_ids


def conversations_for(*, user):
    # A share link's conversations (curation.sharing) belong to the link, also when its
    # visitor was logged in: they never show in, or continue from, the user's own chat.
    return Conversation.objects.filter(user=user, share_link__isnull=True)


def conversation_get(*, user, pk: int) -> Conversation:
    try:
        return conversations_for(user=user).get(pk=pk)
    except (Conversation.DoesNotExist, ValueError, TypeError):
        raise Http404("No such conversation.") from None


def message_get(*, user, pk: int) -> Message:
    try:
        return Message.objects.select_related("conversation").get(
            pk=pk,
            conversation__user=user,
            conversation__share_link__isnull=True,
            role=Message.Role.ASSISTANT,
        )
    except (Message.DoesNotExist, ValueError, TypeError):
        raise Http404("No such message.") from None


def conversation_dict(conversation: Conversation, *, messages: bool = False) -> dict:
    """A conversation (and its messages) as the web UI and the API return it."""
    out = {
        "id": conversation.pk,
        "title": conversation.title,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "knowledge_bases": list(conversation.knowledge_bases.values_list("pk", flat=True)),
    }
    if messages:
        # The owner's own rating, so that a 👍/👎 given earlier shows when the chat reopens.
        ratings = dict(
            Feedback.objects.filter(
                message__conversation=conversation, user_id=conversation.user_id
            ).values_list("message_id", "rating")
        )
        # A document restricted since the answer was given: its sources are no longer shown
        # to a reader who may not see it (the same rule as recall's).
        msgs = list(conversation.messages.all())
        source_docs = {
            s.get("document_id") for m in msgs for s in (m.sources or []) if isinstance(s, dict)
        }
        visible = visible_document_ids(user=conversation.user, ids=source_docs)
        out["messages"] = [
            {
                "id": m.pk,
                "role": m.role,
                "content": m.content,
                "mode": m.mode,
                "sources": [
                    s
                    for s in (m.sources or [])
                    if isinstance(s, dict) and s.get("document_id") in visible
                ],
                "unverified": m.unverified,
                "timings_ms": m.timings,
                "error": m.error,
                "created_at": m.created_at,
                "feedback": ratings.get(m.pk),
            }
            for m in msgs
        ]
    return out


def feedback_for_training(*, knowledge_base) -> list[tuple[str, list[str], list[str]]]:
    """Chat feedback as reranker training data for one knowledge base: (question, passages
    of answers marked helpful that the answer cited, passages of answers marked wrong).

    Only sources whose chunk is still in this knowledge base count: one knowledge base's
    text never trains another's model."""
    from chat.citations import cited_numbers
    from chat.models import Feedback
    from ingestion.models import Chunk

    rows = list(
        Feedback.objects.filter(message__conversation__knowledge_bases=knowledge_base)
        # Accounts only: share-link visitors are the public (curation.sharing.share_feedback).
        .filter(user__isnull=False)
        .select_related("message")
        .order_by("pk")
    )
    chunk_ids = {s.get("chunk_id") for f in rows for s in f.message.sources if isinstance(s, dict)}
    mine = set(
        # Restricted documents never train a model that every member's searches use.
        Chunk.objects.filter(
            knowledge_base=knowledge_base, pk__in=chunk_ids, document__restricted=False
        ).values_list("pk", flat=True)
    )
    by_question: dict[str, tuple[list[str], list[str]]] = {}
    for feedback in rows:
        message = feedback.message
        question = (message.standalone_question or message.question).strip()
        sources = [s for s in message.sources if isinstance(s, dict) and s.get("chunk_id") in mine]
        if not question or not sources:
            continue
        positives, negatives = by_question.setdefault(question, ([], []))
        if feedback.rating > 0:
            cited = set(cited_numbers(message.content)) or {sources[0].get("n")}
            positives += [s["text"] for s in sources if s.get("n") in cited]
        else:
            negatives += [s["text"] for s in sources]
    return [(q, pos, [n for n in neg if n not in pos]) for q, (pos, neg) in by_question.items()]
