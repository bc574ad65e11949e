"""Training-pair sources for one knowledge base. Each yields `TrainingQuery` records and
reads only the knowledge base it is given.

- weak supervision from the knowledge base's own sections (`weak_queries_from_knowledge_base`)
- uploaded question -> answer-document pairs (`qa_pair_queries`, ingestion.models.QAPair)
- chat feedback (`feedback_queries`): any iterable of (question, positive_texts,
  negative_texts), so the chat app can feed it once it records feedback.

`label_rows` runs our own recall for each query: the candidates it returns are the hard
negatives, labelled against the query's positives.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from retrieval.training.weak import Section, weak_query


@dataclass(frozen=True)
class TrainingQuery:
    question: str
    source: str  # weak | qa | feedback
    positive_chunk_ids: frozenset[int] = frozenset()
    positive_document_ids: frozenset[int] = frozenset()
    positive_texts: tuple[str, ...] = ()
    negative_texts: tuple[str, ...] = field(default=())


def weak_queries_from_knowledge_base(
    knowledge_base, *, limit: int = 400, seed: int = 0
) -> list[TrainingQuery]:
    """A weak query per sampled section: parents where chunking made them, else chunks."""
    from ingestion.models import Chunk

    chunks = list(
        # Restricted documents never train a model that every member's searches use.
        Chunk.objects.filter(knowledge_base=knowledge_base, document__restricted=False)
        .select_related("document")
        .only("id", "text", "heading_path", "is_parent", "parent_id", "document")
    )
    children: dict[int, list[int]] = {}
    for chunk in chunks:
        if chunk.parent_id:
            children.setdefault(chunk.parent_id, []).append(chunk.pk)
    units = [c for c in chunks if c.is_parent or not c.parent_id]
    rng = random.Random(seed)
    rng.shuffle(units)
    out = []
    for unit in units:
        if len(out) >= limit:
            break
        heading = unit.heading_path.split(" > ")[-1] if unit.heading_path else ""
        page = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", unit.document.original_name)
        weak = weak_query(Section(page=page, heading=heading, body=unit.text), rng)
        if weak is None:
            continue
        ids = frozenset(children.get(unit.pk, [unit.pk]))
        out.append(
            TrainingQuery(
                question=weak.query,
                source="weak",
                positive_chunk_ids=ids,
                positive_texts=(weak.positive,),
            )
        )
    return out


def qa_pair_queries(knowledge_base) -> list[TrainingQuery]:
    """Uploaded QA pairs whose answer document is (still) in the knowledge base."""
    from ingestion.models import QAPair

    out = []
    for pair in QAPair.objects.filter(
        knowledge_base=knowledge_base, document__isnull=False
    ).select_related("document"):
        if pair.document.knowledge_base_id != knowledge_base.pk:
            continue
        out.append(
            TrainingQuery(
                question=pair.question,
                source="qa",
                positive_document_ids=frozenset([pair.document_id]),
                positive_texts=(pair.answer,) if pair.answer else (),
            )
        )
    return out


def feedback_queries(
    items: Iterable[tuple[str, Sequence[str], Sequence[str]]],
) -> list[TrainingQuery]:
    """(question, passages the user confirmed, passages the user rejected)."""
    out = []
    for question, positives, negatives in items:
        positives = tuple(p for p in positives if p and p.strip())
        if question.strip() and positives:
            out.append(
                TrainingQuery(
                    question=question,
                    source="feedback",
                    positive_texts=positives,
                    negative_texts=tuple(n for n in negatives if n and n.strip()),
                )
            )
    return out


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def is_positive(query: TrainingQuery, candidate) -> bool:
    if candidate.chunk_id in query.positive_chunk_ids:
        return True
    if candidate.document_id in query.positive_document_ids:
        return True
    if query.source == "feedback":
        mine = {_norm(candidate.text), _norm(candidate.context)}
        return any(
            _norm(p) in mine or _norm(candidate.text) in _norm(p) for p in query.positive_texts
        )
    return False


def label_rows(
    knowledge_base, queries: Sequence[TrainingQuery], *, k: int | None = None, progress=None
) -> list[dict]:
    """Each query's recalled candidates (the hard negatives) with 0/1 labels."""
    from django.contrib.auth.models import AnonymousUser

    from ingestion.scope import document_scope
    from retrieval.services import recall

    # What every member may see (an anonymous reader: no restricted documents): their
    # passages are never hard negatives of a model that every member's searches use.
    scope = document_scope(user=AnonymousUser(), knowledge_bases=[knowledge_base])
    rows = []
    for i, query in enumerate(queries):
        found = recall(knowledge_bases=[knowledge_base], query=query.question, k=k, scope=scope)
        labels = [int(is_positive(query, c)) for c in found]
        rows.append(
            {
                "query": query.question,
                "candidates": found,
                "labels": labels,
                "source": query.source,
                # QA pairs name a document; weak queries and feedback name the passage.
                "unit": "document" if query.positive_document_ids else "chunk",
                "positive_texts": query.positive_texts,
                "negative_texts": query.negative_texts,
            }
        )
        if progress is not None:
            progress(i + 1, len(queries))
    return rows
