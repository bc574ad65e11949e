from django.http import Http404

from chat.models import Conversation, Message


def conversations_for(*, user):
    return Conversation.objects.filter(user=user)


def conversation_get(*, user, pk: int) -> Conversation:
    try:
        return conversations_for(user=user).get(pk=pk)
    except (Conversation.DoesNotExist, ValueError, TypeError):
        raise Http404("No such conversation.") from None


def message_get(*, user, pk: int) -> Message:
    try:
        return Message.objects.select_related("conversation").get(
            pk=pk, conversation__user=user, role=Message.Role.ASSISTANT
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
        out["messages"] = [
            {
                "id": m.pk,
                "role": m.role,
                "content": m.content,
                "mode": m.mode,
                "sources": m.sources,
                "unverified": m.unverified,
                "timings_ms": m.timings,
                "error": m.error,
                "created_at": m.created_at,
            }
            for m in conversation.messages.all()
        ]
    return out
