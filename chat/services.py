"""Question -> cited answer: condense, retrieve + rerank, abstain or pack, generate (or
extract), check citations and claims, save. A generator of events, so that the SSE view,
the API and `manage.py ask` all share one pipeline."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.urls import reverse

from chat.abstention import assess
from chat.citations import check_claims, cited_numbers, clean_markers
from chat.extracts import extract_answer
from chat.followups import carry_context
from chat.llm import ChatMessage, LLMError, Usage, get_chat_model
from chat.models import Conversation, Message, Mode
from chat.prompts import (
    answer_messages,
    condense_messages,
    pack_passages,
    prompt_overhead_tokens,
)
from curation.faq import faq_match, faq_record_hit, faq_source
from ragapp.warmup import is_warming, wait_until_warm
from retrieval.fusion import detect_query_language
from retrieval.services import search, settings_for
from retrieval.support import scorer as _scorer
from retrieval.types import Candidate

ABSTAIN_TEXT = {
    "en": "Your documents do not seem to contain the answer to this question. "
    "The nearest passages are listed below.",
    "zh": "您的文档中似乎没有这个问题的答案。下面列出了最相近的段落。",
}
EXTRACT_LABEL = {
    "en": "Extract from your documents (no language model is configured):",
    "zh": "文档摘录（未配置语言模型）：",
}
OMITTED_NOTE = {
    "en": "{n} more passage(s) matched but did not fit in the model's context.",
    "zh": "另有 {n} 个相关段落因超出模型上下文长度而未使用。",
}


@dataclass(frozen=True)
class ChatEvent:
    type: str  # "status" | "sources" | "token" | "done" | "error"
    data: dict = field(default_factory=dict)


def source_url(candidate: Candidate) -> str:
    """Opens the original at the place: a PDF in the app's PDF viewer at its page, anything
    else in the text view; both with the passage highlighted."""
    if candidate.document_name.lower().endswith(".pdf") and candidate.page:
        return (
            reverse("document_pdf", args=[candidate.document_id])
            + f"?page={candidate.page}&chunk={candidate.chunk_id}"
        )
    return (
        reverse("document_view", args=[candidate.document_id])
        + f"?chunk={candidate.chunk_id}#chunk-{candidate.chunk_id}"
    )


def source_dict(n: int, c: Candidate) -> dict:
    return {
        "n": n,
        "chunk_id": c.chunk_id,
        "document_id": c.document_id,
        "document": c.document_name,
        "page": c.page,
        "heading": c.heading_path,
        "sheet": c.sheet or None,
        "slide": c.slide,
        "score": round(c.score, 4),
        "recall_score": round(c.recall_score, 4),
        "text": c.context,
        "url": source_url(c),
    }


def _history(conversation: Conversation, limit_turns: int) -> list[ChatMessage]:
    messages = list(
        conversation.messages.exclude(mode=Mode.ERROR).order_by("-created_at", "-id")[
            : 2 * limit_turns
        ]
    )
    return [ChatMessage(m.role, m.content) for m in reversed(messages) if m.content]


def _normalise(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _previous_question(conversation: Conversation, history: Sequence[ChatMessage]) -> str:
    """The last question of the conversation as retrieval understood it (its standalone
    form), or the client's last user turn when the client sends its own history."""
    last = (
        conversation.messages.filter(role=Message.Role.ASSISTANT)
        .exclude(question="")
        .order_by("-created_at", "-id")
        .first()
    )
    if last is not None:
        return last.standalone_question or last.question
    users = [m.content for m in history if m.role == "user"]
    return users[-1] if users else ""


def answer_question(
    *,
    user,
    knowledge_bases: Sequence,
    question: str,
    conversation: Conversation | None = None,
    history: Sequence[ChatMessage] | None = None,
    filters: dict | None = None,
) -> Iterator[ChatEvent]:
    """Answer one question over knowledge bases already scoped to `user`. `history`
    replaces the conversation's stored history (stateless clients send their own)."""
    t_start = time.perf_counter()
    question = question.replace("\x00", "")  # PostgreSQL text cannot hold NUL
    knowledge_bases = list(knowledge_bases)
    if conversation is None:
        conversation = Conversation.objects.create(user=user, title=question.strip()[:120])
        conversation.knowledge_bases.set(knowledge_bases)
    if history is None:
        history = _history(conversation, settings.RAG_CHAT_HISTORY_TURNS)
    else:
        history = list(history)[-2 * settings.RAG_CHAT_HISTORY_TURNS :]
    asked = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content=question
    )
    assistant = Message(conversation=conversation, role=Message.Role.ASSISTANT, question=question)
    timings: dict[str, float] = {}
    language = detect_query_language(question) or "en"
    overrides = settings_for(knowledge_bases).llm_options if knowledge_bases else {}
    llm = get_chat_model(overrides)
    usage = Usage()
    answer_parts: list[str] = []

    def elapsed() -> float:
        return round((time.perf_counter() - t_start) * 1000, 1)

    def finish(mode: str, content: str, extra: dict | None = None) -> ChatEvent:
        timings["total"] = elapsed()
        assistant.mode = mode
        assistant.content = content
        assistant.timings = timings
        assistant.usage = {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
        }
        assistant.save()
        conversation.save(update_fields=["updated_at"])
        return ChatEvent(
            "done",
            {
                "conversation_id": conversation.pk,
                "message_id": assistant.pk,
                "question": question,
                "standalone_question": assistant.standalone_question or question,
                "mode": mode,
                "answer": content,
                "sources": assistant.sources,
                "unverified": assistant.unverified,
                "omitted_passages": assistant.omitted_passages,
                "abstention": assistant.abstention,
                "timings_ms": timings,
                **(extra or {}),
            },
        )

    saved = False
    try:
        # 1. Condense a follow-up into a standalone question: the LLM rewrites it; without
        # one (or when the rewrite fails) the previous question's words are carried along.
        standalone = question
        t0 = time.perf_counter()
        if history:
            rewritten = ""
            if llm is not None:
                try:
                    rewritten = llm.complete(
                        condense_messages(question=question, history=history),
                        temperature=0.0,
                        max_tokens=200,
                    )
                except LLMError:
                    rewritten = ""
            if not rewritten:
                rewritten = carry_context(question, _previous_question(conversation, history))
            if rewritten and _normalise(rewritten) != _normalise(question):
                standalone = rewritten
                assistant.standalone_question = rewritten
        timings["condense"] = round((time.perf_counter() - t0) * 1000, 1)
        # The conversation exists from here on: the UI lists it in the sidebar at once.
        yield ChatEvent(
            "status",
            {
                "stage": "retrieving",
                "standalone_question": standalone,
                "conversation_id": conversation.pk,
                "title": conversation.title,
            },
        )

        # 2. Retrieve and rerank. After a restart the models load once per process
        # (ragapp.warmup): say so instead of hanging silently.
        if is_warming():
            yield ChatEvent("status", {"stage": "warming"})
            wait_until_warm(timeout=settings.RAG_LLM_TIMEOUT)
        # An owner's FAQ entry whose question matches answers directly, as written (curation
        # .faq); not under a metadata filter, which the FAQ document carries nothing for.
        t0 = time.perf_counter()
        faq = None if filters else faq_match(knowledge_bases=knowledge_bases, question=standalone)
        timings["faq"] = round((time.perf_counter() - t0) * 1000, 1)
        if faq is not None:
            faq_record_hit(entry=faq.entry)
            assistant.sources = [faq_source(faq)]
            yield ChatEvent("sources", {"sources": assistant.sources, "omitted_passages": 0})
            timings["first_token"] = elapsed()
            yield ChatEvent("token", {"text": faq.entry.answer})
            saved = True
            yield finish(Mode.FAQ, faq.entry.answer)
            return
        result = search(
            knowledge_bases=knowledge_bases, query=standalone, user=user, filters=filters
        )
        timings["recall"] = result.timings_ms.get("recall", 0.0)
        timings["rerank"] = result.timings_ms.get("rerank", 0.0)
        timings["support"] = result.timings_ms.get("support", 0.0)

        # 3. Abstain when nothing passes the cut-offs or the calibrated probability that
        # the head answers the question is below the threshold (chat.abstention).
        assessment = assess(
            standalone,
            result.results,
            knowledge_bases=knowledge_bases,
            reranker=result.reranker,
            scope=result.scope,
        )
        assistant.abstention = assessment.as_dict()
        if not result.results or not assessment.answerable:
            nearest = result.results[:3] or result.reranked[:3]
            assistant.sources = [source_dict(n, c) for n, c in enumerate(nearest, start=1)]
            timings["first_token"] = elapsed()
            saved = True
            yield finish(Mode.ABSTAINED, ABSTAIN_TEXT.get(language, ABSTAIN_TEXT["en"]))
            return

        # 4. Pack passages into the model's budget.
        max_tokens = int(overrides.get("max_tokens") or settings.RAG_LLM_MAX_TOKENS)
        budget = (
            int(overrides.get("context_tokens") or settings.RAG_LLM_CONTEXT_TOKENS)
            - max_tokens
            - prompt_overhead_tokens(question=standalone, history=history)
        )
        passages, omitted = pack_passages(result.results, budget_tokens=max(budget, 0))
        assistant.omitted_passages = omitted
        sources = [source_dict(n, c) for n, c in enumerate(passages, start=1)]
        assistant.sources = sources  # kept if the answer is stopped from here on
        yield ChatEvent("sources", {"sources": sources, "omitted_passages": omitted})

        if llm is None:
            # 7. No LLM configured: an honest extract, not a fake generation.
            extract = extract_answer(standalone, passages)
            timings["first_token"] = elapsed()
            content = f"{EXTRACT_LABEL.get(language, EXTRACT_LABEL['en'])}\n{extract}"
            yield ChatEvent("token", {"text": content})
            assistant.sources = sources
            saved = True
            yield finish(Mode.EXTRACTIVE, content)
            return

        # 5. Generate, streamed.
        messages = answer_messages(
            question=standalone, passages=passages, history=history, language=language
        )
        temperature = float(overrides.get("temperature", settings.RAG_LLM_TEMPERATURE))
        try:
            for text in llm.stream(
                messages, temperature=temperature, max_tokens=max_tokens, usage=usage
            ):
                if not answer_parts:
                    timings["first_token"] = elapsed()
                answer_parts.append(text)
                yield ChatEvent("token", {"text": text})
        except LLMError as exc:
            assistant.error = str(exc)
            assistant.sources = sources
            saved = True
            finish(Mode.ERROR, "".join(answer_parts))
            yield ChatEvent(
                "error",
                {
                    "message": str(exc),
                    "conversation_id": conversation.pk,
                    "message_id": assistant.pk,
                },
            )
            return

        # 6 + 8. Citations and claim check.
        raw = "".join(answer_parts)
        answer = clean_markers(raw, set(range(1, len(passages) + 1)))
        cited = set(cited_numbers(answer))
        for source in sources:
            source["cited"] = source["n"] in cited
        checks = check_claims(
            answer,
            [c.context for c in passages],
            scorer=_scorer(),
            threshold=settings.RAG_CLAIM_SUPPORT_THRESHOLD,
        )
        assistant.unverified = [
            {"sentence": c.sentence, "cites": list(c.cites), "support": c.support}
            for c in checks
            if not c.verified
        ]
        if omitted:
            answer = (
                f"{answer}\n\n({OMITTED_NOTE.get(language, OMITTED_NOTE['en']).format(n=omitted)})"
            )
        assistant.sources = sources
        saved = True
        yield finish(Mode.GENERATED, answer)
    finally:
        # The client stopped the answer or went away (or something broke): keep what was
        # streamed and the sources it was streamed from, unless the conversation was cut
        # back past this question meanwhile (regenerate / edit right after Stop).
        if not saved and Message.objects.filter(pk=asked.pk).exists():
            assistant.error = assistant.error or "stopped before the answer was complete"
            timings["total"] = elapsed()
            assistant.mode = Mode.STOPPED
            assistant.content = "".join(answer_parts)
            assistant.timings = timings
            assistant.save()
