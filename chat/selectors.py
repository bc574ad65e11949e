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
