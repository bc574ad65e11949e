"""Retrieval quality on a knowledge base's own question -> document pairs (QAPair), so a
team can see whether a change of chunk size or model helped."""

from __future__ import annotations

import csv
import io
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ingestion.models import KnowledgeBase, QAPair
from retrieval.backends import get_reranker
from retrieval.evaluation import ConfigResult, dedupe_documents
from retrieval.services import recall


def qa_pairs_import(
    *, knowledge_base: KnowledgeBase, text: str, user=None
) -> tuple[int, list[str]]:
    """Read a CSV of `question,document[,answer]` (a header row is optional); match each
    document by file name in the knowledge base. Returns (pairs created, problems)."""
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["question", "document"]:
        rows = rows[1:]
    by_name = {d.original_name.lower(): d for d in knowledge_base.documents.all()}
    created, problems = [], []
    for line, row in enumerate(rows, start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            problems.append(f"row {line}: needs a question and a document name")
            continue
        question, name = row[0].strip(), row[1].strip()
        document = by_name.get(name.lower())
        if document is None:
            problems.append(f"row {line}: no document named {name!r} in this knowledge base")
        created.append(
            QAPair(
                knowledge_base=knowledge_base,
                question=question[:4000],
                document=document,
                document_name=name[:500],
                answer=(row[2].strip() if len(row) > 2 else ""),
                created_by=user,
            )
        )
    with transaction.atomic():
        QAPair.objects.bulk_create(created)
    return len(created), problems


def knowledge_base_evaluate(*, knowledge_base: KnowledgeBase) -> dict:
    """nDCG@10, MRR@10, Recall@10, Recall@k for hybrid recall and with the knowledge base's
    reranker, over its QA pairs whose document exists; stored on the knowledge base."""
    pairs = list(knowledge_base.qa_pairs.filter(document__isnull=False))
    reranker_name = knowledge_base.reranker or settings.RAG_DEFAULT_RERANKER
    backend = get_reranker(reranker_name)
    hybrid, reranked = ConfigResult("hybrid"), ConfigResult(f"hybrid+rerank:{reranker_name}")
    for pair in pairs:
        relevant = {str(pair.document_id): 1}
        timings: dict = {}
        found = recall(knowledge_bases=[knowledge_base], query=pair.question, timings=timings)
        ranked = [str(d) for d in dedupe_documents(c.document_id for c in found)]
        hybrid.add(ranked, ranked, relevant, timings["recall"], 0.0)
        t0 = time.perf_counter()
        order = backend.rerank(pair.question, found)
        rerank_ms = (time.perf_counter() - t0) * 1000
        ranked_after = [str(d) for d in dedupe_documents(c.document_id for c in order)]
        reranked.add(ranked_after, ranked, relevant, timings["recall"], rerank_ms)
        rel = [c.score for c in order if c.document_id == pair.document_id]
        irr = [c.score for c in order if c.document_id != pair.document_id]
        if rel:
            reranked.relevant_scores.append(max(rel))
        if irr:
            reranked.irrelevant_top_scores.append(max(irr))
    result = {
        "evaluated_at": timezone.now().isoformat(),
        "pairs": len(pairs),
        "unmatched_pairs": knowledge_base.qa_pairs.filter(document__isnull=True).count(),
        "results": [hybrid.summary(), reranked.summary()] if pairs else [],
    }
    knowledge_base.last_evaluation = result
    knowledge_base.save(update_fields=["last_evaluation", "updated_at"])
    return result
