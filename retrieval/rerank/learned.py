"""Learned rerankers: the shipped linear ranker, and each knowledge base's own trained model
(a folder written by retrieval.training: ranker.json, plus a fine-tuned cross-encoder when it
has one). Serving only: this package never imports the training code, which depends on it.

RAG_RERANKERS["default"] = {"BACKEND": "retrieval.rerank.learned.LearnedReranker"}
RAG_RERANKERS["kb"] = {"BACKEND": "retrieval.rerank.learned.KnowledgeBaseReranker"}
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from retrieval.rerank.base import BaseReranker
from retrieval.rerank.linear import DEFAULT_MODEL, LinearRanker
from retrieval.types import Candidate

MODEL_FILE = "ranker.json"


def load_ranker(folder: str | Path):
    """A trained model folder: the linear ranker, with its cross-encoder when it has one."""
    from retrieval.rerank.mixed import CROSS_ENCODER_DIR, load_mixed

    folder = Path(folder)
    linear = LinearRanker.load(folder / MODEL_FILE)
    if (folder / CROSS_ENCODER_DIR).is_dir():
        return load_mixed(folder, linear)
    return linear


class LearnedReranker(BaseReranker):
    """Reranker backend for a LinearRanker file (default: the shipped one)."""

    def __init__(self, *, name: str, model_path: str | Path | None = None) -> None:
        self.name = name
        path = Path(model_path) if model_path else DEFAULT_MODEL
        if not path.is_absolute() and not path.exists():
            path = Path(__file__).resolve().parent.parent.parent / path
        self.model_path = path
        self._model: LinearRanker | None = None
        self._lock = threading.Lock()

    def model(self) -> LinearRanker:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = LinearRanker.load(self.model_path)
        return self._model

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """Bare passages carry no first-stage signals: only coverage can speak."""
        candidates = [
            Candidate(chunk_id=i, document_id=i, document_name="", text=p, context=p)
            for i, p in enumerate(passages)
        ]
        return [float(s) for s in self.model().scores(query, candidates)]

    def model_for(self, candidates: Sequence[Candidate]):
        """The model that ranks these candidates (subclasses pick one per knowledge base)."""
        return self.model()

    def candidate_scores(self, query: str, candidates: Sequence[Candidate]) -> Sequence[float]:
        return self.model_for(candidates).scores(query, candidates)


class KnowledgeBaseReranker(LearnedReranker):
    """Each knowledge base's own active trained model (retrieval.models.RerankerModel),
    else the shipped default. Candidates carry their knowledge base; a search over several
    knowledge bases that do not share one model uses the default (scores of different
    models are not comparable)."""

    def __init__(self, *, name: str, model_path: str | Path | None = None) -> None:
        super().__init__(name=name, model_path=model_path)
        self._per_kb: dict[str, object] = {}

    def model_for(self, candidates: Sequence[Candidate]):
        """A LinearRanker, or a MixedRanker when the model has a fine-tuned cross-encoder."""
        from retrieval.models import RerankerModel

        kb_ids = {c.knowledge_base_id for c in candidates}
        if len(kb_ids) != 1 or None in kb_ids:
            return self.model()
        active = RerankerModel.objects.active_for(kb_ids.pop())
        if active is None:
            return self.model()
        if active.path not in self._per_kb:  # a new model gets a new folder: no staleness
            with self._lock:
                if active.path not in self._per_kb:
                    self._per_kb[active.path] = load_ranker(active.path)
        return self._per_kb[active.path]
