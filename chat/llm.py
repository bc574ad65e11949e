"""The LLM behind one small interface; the openai client talks to any compatible server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

logger = logging.getLogger(__name__)


class LLMError(Exception):
    """The LLM server failed (down, slow, refused); the message is shown to the user."""


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatModel(Protocol):
    model: str

    def stream(
        self, messages: Sequence[ChatMessage], *, temperature: float, max_tokens: int, usage: Usage
    ) -> Iterator[str]: ...

    def complete(
        self, messages: Sequence[ChatMessage], *, temperature: float, max_tokens: int
    ) -> str: ...


class OpenAIChatModel:
    def __init__(self, *, base_url: str, api_key: str, model: str, timeout: float) -> None:
        self.base_url = base_url
        self.api_key = api_key or "not-needed"  # many local servers accept any key
        self.model = model
        self.timeout = timeout
        self._client = None
        self._lock = threading.Lock()

    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import openai

                    self._client = openai.OpenAI(
                        base_url=self.base_url,
                        api_key=self.api_key,
                        timeout=self.timeout,
                        max_retries=1,
                    )
        return self._client

    def _error(self, exc: Exception) -> LLMError:
        """A message for end users: where the LLM server lives is for the log only."""
        import openai

        logger.warning(
            "LLM request to %s (model %s) failed: %s: %s",
            self.base_url,
            self.model,
            type(exc).__name__,
            exc,
        )
        if isinstance(exc, openai.APITimeoutError):
            return LLMError(f"The language model did not answer within {self.timeout:.0f} s.")
        if isinstance(exc, openai.APIConnectionError):
            return LLMError(
                "The language model server cannot be reached. "
                "Try again later or ask an administrator."
            )
        if isinstance(exc, openai.APIStatusError):
            return LLMError(
                f"The language model server answered with an error (HTTP {exc.status_code})."
            )
        return LLMError(f"The language model failed: {type(exc).__name__}.")

    def stream(
        self, messages: Sequence[ChatMessage], *, temperature: float, max_tokens: int, usage: Usage
    ) -> Iterator[str]:
        import openai

        try:
            response = self.client().chat.completions.create(
                model=self.model,
                messages=[{"role": m.role, "content": m.content} for m in messages],
                temperature=temperature,
                max_tokens=max_tokens,
                stream=True,
                stream_options={"include_usage": True},
            )
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        try:
            for chunk in response:
                if getattr(chunk, "usage", None):
                    usage.prompt_tokens = chunk.usage.prompt_tokens or 0
                    usage.completion_tokens = chunk.usage.completion_tokens or 0
                for choice in chunk.choices or []:
                    text = choice.delta.content if choice.delta else None
                    if text:
                        yield text
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        finally:
            # Closing the HTTP response stops generation when our client went away.
            response.close()

    def complete(
        self, messages: Sequence[ChatMessage], *, temperature: float, max_tokens: int
    ) -> str:
        import openai

        try:
            response = self.client().chat.completions.create(
                model=self.model,
                messages=[{"role": m.role, "content": m.content} for m in messages],
                temperature=temperature,
                max_tokens=max_tokens,
            )
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        return (response.choices[0].message.content or "").strip()


_models: dict[tuple, OpenAIChatModel] = {}
_models_lock = threading.Lock()


def get_chat_model(overrides: dict | None = None) -> OpenAIChatModel | None:
    """The configured LLM, or None when OPENAI_BASE_URL is not set (extractive mode)."""
    if not settings.OPENAI_BASE_URL:
        return None
    model = (overrides or {}).get("model") or settings.RAG_LLM_MODEL
    key = (settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY, model, settings.RAG_LLM_TIMEOUT)
    with _models_lock:
        if key not in _models:
            _models[key] = OpenAIChatModel(
                base_url=settings.OPENAI_BASE_URL,
                api_key=settings.OPENAI_API_KEY,
                model=model,
                timeout=settings.RAG_LLM_TIMEOUT,
            )
        return _models[key]
