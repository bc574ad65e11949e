from __future__ import annotations

from ninja import Router, Status
from ninja.errors import HttpError

from chat.selectors import conversation_dict, conversation_get, conversations_for
from chat.services import answer_question
from chat.views import sse_response
from ingestion.selectors import readable_knowledge_bases
from ragapp.api.schemas import ChatIn, ConversationDetail, ConversationOut
from ragapp.api.search import readable, request_filters

router = Router(tags=["chat"])


@router.post("/chat", response={200: dict, 502: dict})
def chat(request, payload: ChatIn):
    """Ask; with `stream: true` the answer comes as server-sent events (status, sources,
    token..., done | error); otherwise one JSON object like the final `done` event."""
    filters = request_filters(payload.filters)
    conversation = None
    if payload.conversation_id:
        conversation = conversation_get(user=request.user, pk=payload.conversation_id)
        kbs = readable_knowledge_bases(
            user=request.user,
            ids=conversation.knowledge_bases.values_list("pk", flat=True),
            partial=True,
        )
    else:
        if not payload.knowledge_bases:
            raise HttpError(400, "knowledge_bases is required for a new conversation")
        kbs = readable(request.user, payload.knowledge_bases)
    if not kbs:
        raise HttpError(404, "Not found.")
    events = answer_question(
        user=request.user,
        knowledge_bases=kbs,
        question=payload.question,
        conversation=conversation,
        filters=filters,
    )
    if payload.stream:
        return sse_response(events)
    final = None
    for event in events:
        if event.type in ("done", "error"):
            final = event
    if final.type == "error":
        return Status(
            502,
            {
                "error": {"code": "llm_error", "message": final.data["message"]},
                "conversation_id": final.data["conversation_id"],
            },
        )
    return Status(200, final.data)


@router.get("/conversations", response=list[ConversationOut])
def list_conversations(request):
    return [conversation_dict(c) for c in conversations_for(user=request.user)[:200]]


@router.get("/conversations/{int:conv_id}", response=ConversationDetail)
def get_conversation(request, conv_id: int):
    return conversation_dict(conversation_get(user=request.user, pk=conv_id), messages=True)


@router.delete("/conversations/{int:conv_id}", response={204: None})
def delete_conversation(request, conv_id: int):
    conversation_get(user=request.user, pk=conv_id).delete()
    return Status(204, None)
