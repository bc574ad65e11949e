"""Reranker backends that read bare passages: none (first-stage order), a cross-encoder by
hub name or path, a remote rerank server (Cohere/Jina/Xinference/TEI protocols), and
sentence similarity with an embedder. Chosen in settings.RAG_RERANKERS:

RAG_RERANKERS = {
    "bge": {"BACKEND": "retrieval.rerank.backends.CrossEncoderReranker",
            "OPTIONS": {"model": "BAAI/bge-reranker-v2-m3"}},
    "tei": {"BACKEND": "retrieval.rerank.backends.RemoteReranker",
            "OPTIONS": {"base_url": "http://reranker:8080", "protocol": "tei"}},
    "none": {"BACKEND": "retrieval.rerank.backends.NoReranker"},
}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from retrieval.embedders import _LazyModel
from retrieval.rerank.base import BaseReranker, RerankerError
from retrieval.types import Candidate
from textkit import split_sentences


class NoReranker(BaseReranker):
    """First-stage order, unchanged: for comparison and for the smallest machines."""

    def __init__(self, *, name: str = "none") -> None:
        self.name = name

    def rerank(
        self, query: str, candidates: Sequence[Candidate], top_k: int | None = None
    ) -> list[Candidate]:
        out = [dataclasses.replace(c, rerank_score=c.recall_score) for c in candidates]
        out.sort(key=lambda c: c.recall_rank)
        return out if top_k is None else out[:top_k]

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        return [0.0 for _ in passages]


class CrossEncoderReranker(_LazyModel, BaseReranker):
    """A sentence-transformers CrossEncoder by hub name or local path.

    Passages longer than the model's window are cut into overlapping windows (QAnything:
    512 tokens, 80 overlap) and take the score of their best window. Batched; fp16 on a GPU.
    """

    def __init__(
        self,
        *,
        name: str,
        model: str,
        max_length: int = 512,
        overlap: int = 80,
        batch_size: int = 32,
        device: str | None = None,
        activation: str = "sigmoid",
        num_labels: int | None = None,
    ) -> None:
        self.name = name
        self.model_name = model
        self.max_length = max_length
        self.overlap = overlap
        self.batch_size = batch_size
        self.device = device
        self.activation = activation
        self.num_labels = num_labels
        _LazyModel.__init__(self)

    def _load(self):
        from sentence_transformers import CrossEncoder

        from retrieval.embedders import resolve_model_path

        kwargs = {"max_length": self.max_length}
        if self.num_labels is not None:
            kwargs["num_labels"] = self.num_labels
        model = CrossEncoder(resolve_model_path(self.model_name), device=self.device, **kwargs)
        if model.device.type == "cuda":
            model.model.half()
        model.model.eval()
        return model

    def windows(self, query: str, passage: str) -> list[str]:
        """The passage as-is when it fits beside the query, else overlapping windows."""
        tokenizer = self.model().tokenizer
        query_len = len(tokenizer.tokenize(query))
        budget = self.max_length - query_len - 4  # [CLS] q [SEP] p [SEP] (+1 for XLM-R's pair)
        ids = tokenizer.encode(passage, add_special_tokens=False)
        if len(ids) <= budget or budget <= 32:
            return [passage]
        step = max(budget - self.overlap, 1)
        out = []
        for start in range(0, len(ids), step):
            out.append(tokenizer.decode(ids[start : start + budget]))
            if start + budget >= len(ids):
                break
        return out

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        pairs, owners = [], []
        for i, passage in enumerate(passages):
            for window in self.windows(query, passage):
                pairs.append((query, window))
                owners.append(i)
        raw = self.forward(pairs)
        best = [float("-inf")] * len(passages)
        for owner, value in zip(owners, raw, strict=True):
            best[owner] = max(best[owner], float(value))
        return best

    def forward(self, pairs: list[tuple[str, str]]) -> list[float]:
        """The raw model call (benchmarks compare the whole rerank against this)."""
        import torch

        activation = torch.nn.Sigmoid() if self.activation == "sigmoid" else torch.nn.Identity()
        scores = self.model().predict(
            pairs,
            batch_size=self.batch_size,
            activation_fn=activation,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return [float(s) for s in scores]


class RemoteReranker(BaseReranker):
    """The HTTP rerank protocol of Cohere, Jina, Xinference and text-embeddings-inference.

    `protocol="cohere"` (also Jina, Xinference): POST {base_url}/rerank with
    {"model", "query", "documents"} -> {"results": [{"index", "relevance_score"}]}.
    `protocol="tei"`: POST {base_url}/rerank with {"query", "texts"} -> [{"index", "score"}].
    """

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        model: str = "",
        protocol: str = "cohere",
        api_key: str = "",
        api_key_env: str = "",
        timeout: float = 15.0,
        path: str = "/rerank",
    ) -> None:
        import os

        self.name = name
        self.url = base_url.rstrip("/") + path
        self.model = model
        self.protocol = protocol
        self.api_key = api_key or (os.environ.get(api_key_env, "") if api_key_env else "")
        self.timeout = timeout

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        import httpx

        if not passages:
            return []
        if self.protocol == "tei":
            payload: dict = {"query": query, "texts": list(passages), "raw_scores": False}
        else:
            payload = {"query": query, "documents": list(passages), "top_n": len(passages)}
            if self.model:
                payload["model"] = self.model
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = httpx.post(self.url, json=payload, headers=headers, timeout=self.timeout)
        except httpx.TimeoutException as exc:
            raise RerankerError(
                f"reranker at {self.url} did not answer within {self.timeout:.0f}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise RerankerError(f"reranker at {self.url} is unreachable ({exc})") from exc
        if response.status_code != 200:
            raise RerankerError(
                f"reranker at {self.url} answered HTTP {response.status_code}: "
                f"{response.text[:200]}"
            )
        try:
            body = response.json()
            items = body["results"] if isinstance(body, dict) else body
            scores = [float("-inf")] * len(passages)
            for item in items:
                value = item.get("relevance_score", item.get("score"))
                scores[int(item["index"])] = float(value)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise RerankerError(f"reranker at {self.url} sent an answer we cannot read") from exc
        return scores


class EmbeddingSimilarityReranker(BaseReranker):
    """Cosine similarity between the query and the passage's best-matching sentence, with a
    (multilingual) embedder. Cheap, language-neutral; used where a score of "does this
    passage say this" is needed and no cross-encoder is configured (claim check, extracts).
    """

    def __init__(self, *, name: str, embedder: str = "use", max_sentences: int = 64) -> None:
        self.name = name
        self.embedder_name = embedder
        self.max_sentences = max_sentences

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        from retrieval.backends import get_embedder

        if not passages:
            return []
        embedder = get_embedder(self.embedder_name)
        sentences, owners = [], []
        for i, passage in enumerate(passages):
            parts = split_sentences(passage)[: self.max_sentences] or [passage]
            sentences.extend(parts)
            owners.extend([i] * len(parts))
        vectors = embedder.embed_documents([query, *sentences])
        sims = vectors[1:] @ vectors[0]
        best = [-1.0] * len(passages)
        for owner, sim in zip(owners, sims, strict=True):
            best[owner] = max(best[owner], float(sim))
        return best
