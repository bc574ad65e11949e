"""Fine-tuning a sentence-transformers CrossEncoder on a knowledge base's training queries,
and the second stage that puts it on top of the linear ranker.

Training: each labelled query (retrieval.training.pairs.label_rows) gives a group
(question, one positive passage, hard negatives = the highest recalled passages that are
not positive, plus passages users rejected in chat); the loss is multiple-negatives
ranking (softmax cross-entropy over the group's logits). That loss learns from the
offline MiniLM weights, whose classification head starts untrained; binary cross-entropy
on the same pairs did not (measured outside the product, see the issue). A plain torch
loop: no `datasets`/`accelerate` needed, and it reports progress to the caller.

Inference (`MixedRanker`, retrieval.rerank.mixed): the linear ranker orders all candidates
and the cross-encoder re-reads its head; `best_alphas` here chooses, per query language on
queries the cross-encoder did not train on, how far it may move them.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from retrieval.rerank.linear import LinearRanker
from retrieval.rerank.mixed import (  # noqa: F401 - serving pieces, re-exported for benches
    CROSS_ENCODER_DIR,
    MixedRanker,
    _encode,
    device_default,
    load_cross_encoder,
    load_mixed,
    logits,
    passage,
)

ALPHAS = (0.0, 0.5, 1.0, 2.0, 4.0)


@dataclasses.dataclass(frozen=True)
class CrossEncoderConfig:
    max_length: int = 128
    batch_size: int = 8
    negatives: int = 3
    epochs: int = 2
    min_steps: int = 60  # a small knowledge base gets more passes: the head starts untrained
    learning_rate: float | None = None  # None: 2e-4 for a fresh head, 2e-5 for a reranker
    warmup: float = 0.1
    top: int = 10  # candidates the cross-encoder re-reads at query time


@dataclasses.dataclass(frozen=True)
class Group:
    question: str
    positive: str
    negatives: tuple[str, ...]


def training_groups(rows: Sequence[dict], *, negatives: int, seed: int = 0) -> list[Group]:
    """One group per query with a positive: the best-recalled positive passage (or the
    query's own positive text), and the highest recalled non-positive passages."""
    rng = random.Random(seed)
    groups = []
    for row in rows:
        cands, labels = row["candidates"], row["labels"]
        positives = [passage(c) for c, y in zip(cands, labels, strict=True) if y]
        if not positives:
            positives = list(row.get("positive_texts") or ())
        if not positives:
            continue
        hard = list(row.get("negative_texts") or ())
        hard += [passage(c) for c, y in zip(cands, labels, strict=True) if not y]
        groups.append(Group(row["query"], positives[0], tuple(dict.fromkeys(hard))[:negatives]))
    # Too few hard negatives (a tiny knowledge base): other queries' positives fill in.
    pool = [g.positive for g in groups]
    out = []
    for g in groups:
        extra = [p for p in rng.sample(pool, min(len(pool), negatives + 1)) if p != g.positive]
        out.append(dataclasses.replace(g, negatives=(g.negatives + tuple(extra))[:negatives]))
    return [g for g in out if g.negatives]


def has_trained_head(path_or_name: str) -> bool:
    """Whether the base already is a reranker (then it needs a gentler learning rate)."""
    from transformers import AutoConfig

    from retrieval.embedders import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(path_or_name))
    return any(a.endswith("ForSequenceClassification") for a in config.architectures or ())


def fine_tune(
    base: str,
    groups: Sequence[Group],
    *,
    config: CrossEncoderConfig,
    device: str | None = None,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
):
    """Train and return the CrossEncoder; `progress(step, total, loss)` after each batch."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = load_cross_encoder(base, max_length=config.max_length, device=device)
    learning_rate = config.learning_rate or (2e-5 if has_trained_head(base) else 2e-4)
    net = model.model
    batches_per_epoch = max(math.ceil(len(groups) / config.batch_size), 1)
    epochs = max(config.epochs, math.ceil(config.min_steps / batches_per_epoch))
    total = batches_per_epoch * epochs
    warmup = max(int(total * config.warmup), 1)
    optimizer = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(total - step, 0) / max(total - warmup, 1)),
    )
    net.train()
    step = 0
    for _ in range(epochs):
        order = list(groups)
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            width = 1 + config.negatives
            questions, texts = [], []
            for g in batch:
                negs = list(g.negatives) + [g.negatives[-1]] * (config.negatives - len(g.negatives))
                questions += [g.question] * width
                texts += [g.positive, *negs]
            scores = net(**_encode(model, questions, texts)).logits[:, 0].view(len(batch), width)
            target = torch.zeros(len(batch), dtype=torch.long, device=scores.device)
            loss = F.cross_entropy(scores, target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if progress is not None:
                progress(step, total, loss.item())
    net.eval()
    model.fit_info = {
        "learning_rate": learning_rate,
        "epochs_run": epochs,
        "steps": total,
        "device": str(model.device),
    }
    return model


def save(model, folder: Path) -> float:
    """Write the model in fp16 under folder/cross_encoder; returns its size in MB."""
    target = folder / CROSS_ENCODER_DIR
    net = model.model
    dtype = next(net.parameters()).dtype
    net.half()
    try:
        model.save_pretrained(str(target))
    finally:
        net.to(dtype=dtype)
    return round(sum(f.stat().st_size for f in target.rglob("*") if f.is_file()) / 1e6, 1)


def pairwise_accuracy(model, groups: Sequence[Group]) -> float:
    """How often the positive outscores each of its hard negatives: what training
    optimises, and a steadier measure than nDCG on a few dozen held-out queries."""
    wins = total = 0
    for group in groups:
        s = logits(model, group.question, [group.positive, *group.negatives])
        wins += int((s[0] > s[1:]).sum())
        total += len(s) - 1
    return round(wins / total, 4) if total else 0.0


def best_alphas(rows: Sequence[dict], linear: LinearRanker, model, *, top: int) -> dict[str, float]:
    """Per query language, the mixing weight that ranks `rows` (queries the cross-encoder
    did not train on) best; ties and languages with under 5 such queries get 0."""
    from retrieval.training.ranker import by_language, ranking_metrics

    out = {"en": 0.0, "zh": 0.0}
    memo: dict = {}
    for language, lang_rows in by_language(rows).items():
        if len(lang_rows) < 5:
            continue
        scored = {
            a: ranking_metrics(lang_rows, MixedRanker(linear, model, a, top, memo=memo))["ndcg@10"]
            for a in ALPHAS
        }
        out[language] = max(scored, key=lambda a: (scored[a], -a))
    return out
