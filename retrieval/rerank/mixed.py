"""A knowledge base's fine-tuned cross-encoder on top of its linear ranker (serving side;
retrieval.training.cross_encoder trains it).

`MixedRanker`: the linear ranker orders all candidates; the cross-encoder re-reads the first
`top` of them and moves each by `alpha` standard deviations of its own per-query z-score, in
the linear ranker's units, so score cut-offs keep their meaning. `alpha` is chosen per query
language on queries the cross-encoder did not train on, and is 0 where it did not help or
could not be measured (MiniLM reads no Chinese).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from retrieval.fusion import detect_query_language
from retrieval.rerank.base import zscore
from retrieval.rerank.linear import LinearRanker
from retrieval.types import Candidate

CROSS_ENCODER_DIR = "cross_encoder"


def passage(candidate: Candidate) -> str:
    return candidate.context or candidate.text


def device_default() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_cross_encoder(path_or_name: str, *, max_length: int, device: str | None = None):
    from sentence_transformers import CrossEncoder

    from retrieval.embedders import resolve_model_path

    model = CrossEncoder(
        resolve_model_path(path_or_name),
        num_labels=1,
        max_length=max_length,
        device=device or device_default(),
    )
    if model.device.type == "cpu":
        model.model.float()  # stored in fp16 (half the disk); fp32 is faster on a CPU
    return model


def _encode(model, questions: list[str], texts: list[str]):
    return model.tokenizer(
        questions,
        texts,
        padding=True,
        truncation="longest_first",
        max_length=model.max_seq_length,
        return_tensors="pt",
    ).to(model.device)


def logits(model, question: str, passages: Sequence[str], *, batch_size: int = 16) -> np.ndarray:
    """Raw relevance logits of (question, passage) pairs, the training objective's scale."""
    import torch

    if not passages:
        return np.zeros(0)
    net = model.model
    net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(passages), batch_size):
            chunk = list(passages[start : start + batch_size])
            enc = _encode(model, [question] * len(chunk), chunk)
            out.append(net(**enc).logits[:, 0].float().cpu().numpy())
    return np.concatenate(out)


@dataclasses.dataclass
class MixedRanker:
    """The linear ranker, then the cross-encoder on its top candidates."""

    linear: LinearRanker
    model: object  # a loaded CrossEncoder
    alpha: float | Mapping[str, float] = 1.0  # one weight, or one per query language
    top: int = 10
    only: bool = False  # order the head by the cross-encoder alone (for comparison tables)
    memo: dict | None = None  # (query, passages) -> logits, when scoring rows repeatedly

    def _logits(self, query: str, passages: list[str]) -> np.ndarray:
        if self.memo is None:
            return logits(self.model, query, passages)
        key = (query, tuple(passages))
        if key not in self.memo:
            self.memo[key] = logits(self.model, query, passages)
        return self.memo[key]

    def weight(self, query: str) -> float:
        if isinstance(self.alpha, Mapping):
            return float(self.alpha.get(detect_query_language(query) or "en", 0.0))
        return float(self.alpha)

    def scores(self, query: str, candidates: Sequence[Candidate]) -> np.ndarray:
        base = np.asarray(self.linear.scores(query, candidates), dtype=float)
        alpha = self.weight(query)
        if len(candidates) < 2 or (alpha == 0 and not self.only):
            return base
        head = np.argsort(-base, kind="stable")[: self.top]
        ce = self._logits(query, [passage(candidates[i]) for i in head])
        out = base.copy()
        if self.only:
            out[head] = base.max() + 1.0 + ce - ce.min()
            return out
        spread = base[head].std() or 1.0
        out[head] += alpha * spread * zscore(ce)
        return out


def load_mixed(folder: Path, linear: LinearRanker) -> MixedRanker:
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    mix = card.get("cross_encoder", {})
    model = load_cross_encoder(
        str(folder / CROSS_ENCODER_DIR), max_length=int(mix.get("max_length", 128))
    )
    alpha = mix.get("alpha", 1.0)
    alpha = {k: float(v) for k, v in alpha.items()} if isinstance(alpha, dict) else float(alpha)
    return MixedRanker(linear=linear, model=model, alpha=alpha, top=int(mix.get("top", 10)))
