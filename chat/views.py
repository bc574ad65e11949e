"""Chat pages and the streaming endpoint (server-sent events). Thin: the pipeline is
chat.services.answer_question."""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import Http404, HttpResponseBadRequest, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from chat.conversations import conversation_truncate
from chat.models import Feedback
from chat.selectors import conversation_dict, conversation_get, conversations_for, message_get
from chat.services import answer_question
from ingestion.models import Document, DocumentStatus
from ingestion.scope import parse_filters
from ingestion.selectors import knowledge_bases_for, readable_knowledge_bases
from ragapp.validation import parse_int, storable_text, text_problem


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


def _preselected(*, user, kbs, ready: dict[int, int], requested: str | None) -> set[int]:
    """The knowledge bases a new chat starts with: the one asked for in ?kb=, else those
    of the user's latest conversation (what they last chose), else the first one that has
    ready documents: never a new, empty one that can only abstain."""
    readable = {kb.pk for kb in kbs}
    if parse_int(requested) in readable:
        return {parse_int(requested)}
    latest = conversations_for(user=user).first()
    if latest is not None:
        last = set(latest.knowledge_bases.values_list("pk", flat=True)) & readable
        if last:
            return last
    return next(({kb.pk} for kb in kbs if ready.get(kb.pk)), set())


@login_required
def chat_page(request, pk: int | None = None):
    conversation = conversation_get(user=request.user, pk=pk) if pk else None
    kbs = list(knowledge_bases_for(user=request.user))
    ready = dict(
        Document.objects.filter(knowledge_base__in=kbs, status=DocumentStatus.READY)
        .values("knowledge_base")
        .annotate(n=Count("pk"))
        .values_list("knowledge_base", "n")
    )
    for kb in kbs:
        kb.ready_documents = ready.get(kb.pk, 0)
    if conversation:
        selected = set(conversation.knowledge_bases.values_list("pk", flat=True))
    else:
        selected = _preselected(
            user=request.user, kbs=kbs, ready=ready, requested=request.GET.get("kb")
        )
    return render(
        request,
        "chat/chat.html",
        {
            "conversation": conversation,
            "conversations": conversations_for(user=request.user)[:50],
            "knowledge_bases": kbs,
            "selected": selected,
            "kb_tags": _tags_of(user=request.user, kbs=kbs),
        },
    )


def _tags_of(*, user, kbs, limit: int = 200) -> list[tuple[str, str]]:
    """The filter picker's tags: (tag, "kb ids") from the documents the user may read."""
    from django.db.models import F, Func

    from ingestion.selectors import visible_documents

    pairs = (
        visible_documents(user=user)
        .filter(knowledge_base__in=kbs)
        .annotate(tag=Func(F("tags"), function="unnest"))
        .values_list("tag", "knowledge_base")
        .distinct()
        .order_by("tag")
    )
    by_tag: dict[str, list[str]] = {}
    for tag, kb_id in pairs[: limit * 4]:
        by_tag.setdefault(tag, []).append(str(kb_id))
    return [(tag, " ".join(ids)) for tag, ids in list(by_tag.items())[:limit]]


@login_required
@require_POST
def ask_stream(request):
    """POST question, kb (repeatable), conversation (optional) -> text/event-stream."""
    question = (request.POST.get("question") or "").strip()
    if not question:
        return HttpResponseBadRequest("question is required")
    if len(question) > 4000:
        return HttpResponseBadRequest("question is too long (4000 characters at most)")
    if text_problem(question):
        return HttpResponseBadRequest(f"question {text_problem(question)}")
    conversation = None
    if request.POST.get("conversation"):
        conversation_id = parse_int(request.POST["conversation"])
        if conversation_id is None:
            raise Http404("No such conversation.")
        conversation = conversation_get(user=request.user, pk=conversation_id)
        kbs = readable_knowledge_bases(
            user=request.user,
            ids=conversation.knowledge_bases.values_list("pk", flat=True),
            partial=True,
        )
    else:
        ids = [i for i in map(parse_int, request.POST.getlist("kb")) if i is not None]
        # The form's unknown or no longer readable ids are skipped, not refused.
        kbs = readable_knowledge_bases(user=request.user, ids=ids, partial=True)
    if not kbs:
        return HttpResponseBadRequest("choose at least one knowledge base you can read")
    try:  # the filter picker: `filters` is JSON in the filter language (ingestion.scope)
        filters = parse_filters(json.loads(request.POST.get("filters") or "null"))
    except ValueError as exc:  # InvalidFilter is a ValueError, as is bad JSON
        return HttpResponseBadRequest(f"filters: {exc}")
    events = answer_question(
        user=request.user,
        knowledge_bases=kbs,
        question=question,
        conversation=conversation,
        filters=filters,
    )
    return sse_response(events)


@login_required
@require_POST
def conversation_rename(request, pk: int):
    conversation = conversation_get(user=request.user, pk=pk)
    title = storable_text(request.POST.get("title") or "").strip()[:200]
    conversation.title = title or conversation.title
    conversation.save(update_fields=["title", "updated_at"])
    return redirect("chat_conversation", pk=pk)


@login_required
@require_POST
def conversation_delete(request, pk: int):
    conversation_get(user=request.user, pk=pk).delete()
    return redirect("chat")


@login_required
@require_POST
def conversation_truncate_view(request, pk: int):
    """POST message=<id>: delete that question (or the question of that answer) and all
    after it; returns {"question": text} for the browser to ask again (regenerate, edit)."""
    conversation = conversation_get(user=request.user, pk=pk)
    try:
        message = conversation.messages.get(pk=parse_int(request.POST.get("message")))
    except conversation.messages.model.DoesNotExist:
        raise Http404("No such message.") from None
    question = conversation_truncate(conversation=conversation, message=message)
    return JsonResponse({"conversation_id": conversation.pk, "question": question})


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
        defaults={
            "rating": rating,
            "comment": storable_text(request.POST.get("comment") or "")[:2000],
        },
    )
    return JsonResponse({"ok": True, "rating": rating})
