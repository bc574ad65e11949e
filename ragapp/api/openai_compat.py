"""An OpenAI-compatible endpoint: each knowledge base a user can read is a model `kb-<id>`
(several at once: `kb-1+kb-2`), so existing OpenAI clients and chat front-ends can talk to
knowledge bases. Answers carry [n] markers; the sources come in a `sources` field."""

from __future__ import annotations

import json
import time
import uuid

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from chat.llm import ChatMessage
from chat.services import answer_question
from ingestion.scope import InvalidFilter, parse_filters
from ingestion.selectors import knowledge_bases_for, readable_knowledge_bases
from ragapp.api.auth import RateLimited, bearer_user
from ragapp.validation import parse_int, text_problem


def _error(status: int, message: str, type_: str, code: str | None = None) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "type": type_, "code": code}}, status=status)


def _auth(request):
    try:
        user = bearer_user(request)
    except RateLimited as exc:
        response = _error(429, "Rate limit exceeded for this token.", "rate_limit_error")
        response["Retry-After"] = str(exc.retry_after)
        return None, response
    if user is None:
        return None, _error(
            401, "A valid API token is required.", "invalid_request_error", "invalid_api_key"
        )
    return user, None


def _model_ids(kbs) -> list[dict]:
    return [
        {
            "id": f"kb-{kb.pk}",
            "object": "model",
            "created": int(kb.created_at.timestamp()),
            "owned_by": kb.owner.username,
            "name": kb.name,
        }
        for kb in kbs
    ]


@csrf_exempt
@require_GET
def models(request):
    user, failure = _auth(request)
    if failure:
        return failure
    kbs = knowledge_bases_for(user=user).select_related("owner")
    return JsonResponse({"object": "list", "data": _model_ids(kbs)})


def _knowledge_bases(user, model: str):
    ids = []
    for part in model.split("+"):
        part = part.strip()
        pk = parse_int(part[3:]) if part.startswith("kb-") else None
        if pk is None:
            return None
        ids.append(pk)
    return readable_knowledge_bases(user=user, ids=ids)


@csrf_exempt
@require_POST
def chat_completions(request):
    user, failure = _auth(request)
    if failure:
        return failure
    try:
        body = json.loads(request.body or b"{}")
    except RequestDataTooBig:
        return _error(
            413,
            f"The body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
            "invalid_request_error",
            "request_too_large",
        )
    except ValueError:
        return _error(400, "The body is not valid JSON.", "invalid_request_error")
    if not isinstance(body, dict):
        return _error(400, "The body must be a JSON object.", "invalid_request_error")
    kbs = _knowledge_bases(user, str(body.get("model", "")))
    if not kbs:
        return _error(
            404,
            f"The model {body.get('model')!r} does not exist.",
            "invalid_request_error",
            "model_not_found",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(400, "messages must be a non-empty list.", "invalid_request_error")
    turns = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content", ""), str):
            return _error(
                400, "each message needs a role and text content.", "invalid_request_error"
            )
        problem = text_problem(m.get("content", ""))
        if problem:
            return _error(400, f"message content {problem}.", "invalid_request_error")
        if m.get("role") in ("user", "assistant") and m.get("content"):
            turns.append(ChatMessage(m["role"], m["content"]))
    if not turns or turns[-1].role != "user":
        return _error(400, "the last message must be the user's question.", "invalid_request_error")
    question, history = turns[-1].content[:4000], turns[:-1]
    try:  # `metadata`: a filter in the filter language ({"tags": [...], "meta": {...}})
        filters = parse_filters(body.get("metadata"))
    except InvalidFilter as exc:
        return _error(400, f"metadata: {exc}", "invalid_request_error", "invalid_metadata")
    events = answer_question(
        user=user, knowledge_bases=kbs, question=question, history=history, filters=filters
    )
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    model = body["model"]
    if body.get("stream"):
        return _stream(events, completion_id, created, model)
    final = None
    for event in events:
        if event.type in ("done", "error"):
            final = event
    if final.type == "error":
        return _error(502, final.data["message"], "api_error", "upstream_error")
    data = final.data
    return JsonResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": data["answer"]},
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "sources": data["sources"],
            "rag": {
                "mode": data["mode"],
                "unverified": data["unverified"],
                "timings_ms": data["timings_ms"],
                "conversation_id": data["conversation_id"],
            },
        }
    )


def _stream(events, completion_id: str, created: int, model: str) -> StreamingHttpResponse:
    def chunk(delta: dict, finish=None, **extra) -> str:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def frames():
        sent_role = False
        try:
            for event in events:
                if not sent_role:
                    yield chunk({"role": "assistant", "content": ""})
                    sent_role = True
                if event.type == "token":
                    yield chunk({"content": event.data["text"]})
                elif event.type == "done":
                    if event.data["mode"] == "abstained":
                        yield chunk({"content": event.data["answer"]})
                    yield chunk(
                        {},
                        "stop",
                        sources=event.data["sources"],
                        rag={"mode": event.data["mode"], "unverified": event.data["unverified"]},
                    )
                elif event.type == "error":
                    error = {"error": {"message": event.data["message"], "type": "api_error"}}
                    yield f"data: {json.dumps(error)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            events.close()

    response = StreamingHttpResponse(frames(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
