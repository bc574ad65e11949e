"""Aggregations for the owners' and the staff dashboards. Plain functions over querysets of
knowledge bases the caller has already scoped; no request objects here."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from chat.models import Conversation, Feedback, Message, Mode
from ingestion.models import Chunk, Document, DocumentStatus
from textkit import percentile

STAGES = ("condense", "recall", "rerank", "first_token", "total")
PERCENTILES = (50, 90, 99)
# Latency percentiles read the most recent answers only: enough for stable numbers without
# loading a busy site's whole history into memory.
LATENCY_SAMPLE = 2000
FAILURES_SHOWN = 50
GAPS_SHOWN = 10


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    css: str = ""


@dataclass(frozen=True)
class Dashboard:
    documents_by_status: list[Bar]
    failures: list[Document]
    documents: int
    chunks: int
    storage_bytes: int
    questions_per_day: list[Bar]
    questions: int
    latency: dict[str, dict[int, float]]  # stage -> percentile -> ms
    modes: list[Bar]
    abstention_share: float | None
    feedback_up: int
    feedback_down: int
    gaps: list[tuple[str, int]]
    evaluation: dict = field(default_factory=dict)
    # People who asked through a share link without an account (curation.sharing).
    visitors: int = 0


def _conversation_ids(knowledge_bases):
    return Conversation.objects.filter(knowledge_bases__in=knowledge_bases).values("pk")


def documents_by_status(knowledge_bases) -> list[Bar]:
    counts = dict(
        Document.objects.filter(knowledge_base__in=knowledge_bases)
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    return [Bar(str(label), counts.get(value, 0), value) for value, label in DocumentStatus.choices]


def questions_per_day(answers, *, days: int = 30, today: date | None = None) -> list[Bar]:
    today = today or timezone.localdate()
    start = today - timedelta(days=days - 1)
    counts = dict(
        answers.filter(created_at__date__gte=start)
        .annotate(day=TruncDate("created_at"))
        .values_list("day")
        .annotate(n=Count("pk"))
    )
    return [
        Bar((start + timedelta(days=i)).strftime("%m-%d"), counts.get(start + timedelta(days=i), 0))
        for i in range(days)
    ]


def latency_percentiles(answers) -> dict[str, dict[int, float]]:
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    recent = answers.exclude(mode=Mode.ERROR).order_by("-created_at")[:LATENCY_SAMPLE]
    for timings in recent.values_list("timings", flat=True):
        for stage in STAGES:
            value = (timings or {}).get(stage)
            if isinstance(value, int | float):
                samples[stage].append(float(value))
    return {
        stage: {q: round(percentile(values, q), 1) for q in PERCENTILES}
        for stage, values in samples.items()
        if values
    }


def _normalise(question: str) -> str:
    return re.sub(r"\s+", " ", question.strip().lower().rstrip("?？。.!！"))


def gaps(answers, *, limit: int = GAPS_SHOWN) -> list[tuple[str, int]]:
    """The most-asked questions that got no answer, grouped by their normalised text."""
    counter: Counter[str] = Counter()
    first_form: dict[str, str] = {}
    for question in answers.filter(mode=Mode.ABSTAINED).values_list("question", flat=True)[:5000]:
        key = _normalise(question)
        if key:
            counter[key] += 1
            first_form.setdefault(key, question.strip())
    return [(first_form[key], n) for key, n in counter.most_common(limit)]


def dashboard_for(knowledge_bases) -> Dashboard:
    """Everything the dashboard shows, over these (already permission-scoped) knowledge bases."""
    docs = Document.objects.filter(knowledge_base__in=knowledge_bases)
    answers = Message.objects.filter(
        role=Message.Role.ASSISTANT, conversation__in=_conversation_ids(knowledge_bases)
    )
    mode_counts = dict(answers.values_list("mode").annotate(n=Count("pk")))
    modes = [Bar(str(label), mode_counts.get(value, 0), value) for value, label in Mode.choices]
    total = sum(bar.value for bar in modes)
    feedback = Feedback.objects.filter(message__in=answers).aggregate(
        up=Count("pk", filter=Q(rating=1)), down=Count("pk", filter=Q(rating=-1))
    )
    kbs = list(knowledge_bases)
    return Dashboard(
        documents_by_status=documents_by_status(knowledge_bases),
        failures=list(
            docs.filter(status=DocumentStatus.FAILED)
            .select_related("knowledge_base")
            .order_by("-updated_at")[:FAILURES_SHOWN]
        ),
        documents=docs.count(),
        chunks=Chunk.objects.filter(knowledge_base__in=knowledge_bases, is_parent=False).count(),
        storage_bytes=docs.aggregate(s=Sum("size"))["s"] or 0,
        questions_per_day=questions_per_day(answers),
        questions=total,
        latency=latency_percentiles(answers),
        modes=modes,
        abstention_share=(mode_counts.get(Mode.ABSTAINED, 0) / total) if total else None,
        feedback_up=feedback["up"],
        feedback_down=feedback["down"],
        gaps=gaps(answers),
        evaluation=(kbs[0].last_evaluation or {}) if len(kbs) == 1 else {},
        visitors=Conversation.objects.filter(
            pk__in=_conversation_ids(knowledge_bases), share_link__isnull=False, user=None
        )
        .order_by()
        .values("visitor")
        .distinct()
        .count(),
    )


def evaluation_rows(evaluation: dict) -> list[Bar]:
    """The numeric metrics of a stored evaluation, flattened (`{"ndcg@10": 0.7, ...}` or
    nested under "metrics"), for a bar chart; other keys are shown as they are."""
    rows = []
    if isinstance(evaluation, dict) and isinstance(evaluation.get("results"), list):
        # retrieval.qa_eval's shape: one entry per configuration
        for result in evaluation["results"]:
            for metric in ("ndcg@10", "mrr@10", "recall@10"):
                if isinstance(result.get(metric), int | float):
                    rows.append(Bar(f"{result.get('config', '')} {metric}", float(result[metric])))
        return rows
    source = evaluation.get("metrics", evaluation) if isinstance(evaluation, dict) else {}
    for key, value in source.items() if isinstance(source, dict) else []:
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            rows.append(Bar(str(key), float(value)))
        elif isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    rows.append(Bar(f"{key} {sub}", float(v)))
    return rows


@dataclass(frozen=True)
class ChartBar:
    label: str
    value: float
    x: float
    y: float
    width: float
    height: float
    css: str = ""


def bar_chart(
    bars: Sequence[Bar], *, width: int = 600, height: int = 160, max_value: float | None = None
) -> list[ChartBar]:
    """Geometry of a vertical bar chart drawn as inline SVG (the template draws it)."""
    if not bars:
        return []
    top = max_value if max_value is not None else max((b.value for b in bars), default=0)
    top = top or 1
    slot = width / len(bars)
    gap = min(slot * 0.2, 8)
    plot = height - 20  # room for the labels under the bars
    out = []
    for i, b in enumerate(bars):
        h = plot * (b.value / top) if b.value > 0 else 0
        out.append(
            ChartBar(
                b.label,
                b.value,
                round(i * slot + gap / 2, 1),
                round(plot - h, 1),
                round(slot - gap, 1),
                round(h, 1),
                b.css,
            )
        )
    return out


def hbar_chart(
    bars: Sequence[Bar], *, width: int = 300, max_value: float | None = None
) -> list[ChartBar]:
    """Geometry of horizontal bars, one row of 22 px each."""
    top = max_value if max_value is not None else max((b.value for b in bars), default=0)
    top = top or 1
    return [
        ChartBar(b.label, b.value, 0, i * 22, round(width * max(b.value, 0) / top, 1), 16, b.css)
        for i, b in enumerate(bars)
    ]
