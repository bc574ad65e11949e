"""Chat pages and the streaming endpoint (server-sent events). Thin: the pipeline is
chat.services.answer_question."""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.http import HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from chat.models import Feedback
from chat.selectors import conversation_dict, conversation_get, conversations_for, message_get
from chat.services import answer_question
from ingestion.selectors import knowledge_bases_for


def sse(event_type: str, data: dict) -> str:
    return f"event: {event_type}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def event_stream(events):
    """SSE frames; when the client disconnects, the server closes this generator, which
    closes the pipeline's generator and with it the LLM's HTTP stream."""
    yield ": stream open\n\n"
    try:
        for event in events:
            yield sse(event.type, event.data)
    finally:
        events.close()


def sse_response(events) -> StreamingHttpResponse:
    response = StreamingHttpResponse(event_stream(events), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


@login_required
def chat_page(request, pk: int | None = None):
    conversation = conversation_get(user=request.user, pk=pk) if pk else None
    kbs = knowledge_bases_for(user=request.user)
    selected = (
        set(conversation.knowledge_bases.values_list("pk", flat=True)) if conversation else set()
    )
    return render(
        request,
        "chat/chat.html",
        {
            "conversation": conversation,
            "messages_": conversation.messages.all() if conversation else [],
            "conversations": conversations_for(user=request.user)[:50],
            "knowledge_bases": kbs,
            "selected": selected,
        },
    )


@login_required
@require_POST
def ask_stream(request):
    """POST question, kb (repeatable), conversation (optional) -> text/event-stream."""
    question = (request.POST.get("question") or "").strip()
    if not question:
        return HttpResponseBadRequest("question is required")
    if len(question) > 4000:
        return HttpResponseBadRequest("question is too long (4000 characters at most)")
    conversation = None
    if request.POST.get("conversation"):
        conversation = conversation_get(user=request.user, pk=request.POST["conversation"])
        kbs = list(
            knowledge_bases_for(user=request.user).filter(pk__in=conversation.knowledge_bases.all())
        )
    else:
        ids = [i for i in request.POST.getlist("kb") if i.isdigit()]
        kbs = list(knowledge_bases_for(user=request.user).filter(pk__in=ids))
    if not kbs:
        return HttpResponseBadRequest("choose at least one knowledge base you can read")
    events = answer_question(
        user=request.user, knowledge_bases=kbs, question=question, conversation=conversation
    )
    return sse_response(events)


@login_required
@require_POST
def conversation_rename(request, pk: int):
    conversation = conversation_get(user=request.user, pk=pk)
    title = (request.POST.get("title") or "").replace("\x00", "").strip()[:200]
    conversation.title = title or conversation.title
    conversation.save(update_fields=["title", "updated_at"])
    return redirect("chat_conversation", pk=pk)


@login_required
@require_POST
def conversation_delete(request, pk: int):
    conversation_get(user=request.user, pk=pk).delete()
    return redirect("chat")


@login_required
@require_GET
def conversation_json(request, pk: int):
    conversation = conversation_get(user=request.user, pk=pk)
    return JsonResponse(conversation_dict(conversation, messages=True))


@login_required
@require_POST
def feedback(request, pk: int):
    message = message_get(user=request.user, pk=pk)
    try:
        rating = int(request.POST.get("rating", "0"))
    except ValueError:
        rating = 0
    if rating not in (1, -1):
        return HttpResponseBadRequest("rating must be 1 or -1")
    Feedback.objects.update_or_create(
        message=message,
        user=request.user,
        defaults={"rating": rating, "comment": (request.POST.get("comment") or "")[:2000]},
    )
    return JsonResponse({"ok": True, "rating": rating})
