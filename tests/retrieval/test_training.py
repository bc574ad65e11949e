import io
import json
import random
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import transaction

from retrieval.second_stage import DEFAULT_MODEL, LinearRanker
from retrieval.training.pairs import (
    feedback_queries,
    is_positive,
    label_rows,
    qa_pair_queries,
    weak_queries_from_knowledge_base,
)
from retrieval.training.ranker import fit_language_models, ranking_metrics, split
from retrieval.training.weak import Section, first_sentence, weak_query
from retrieval.types import Candidate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TINY_CORPUS = [
    "postgresql-queries-with.en.md",
    "postgresql-indexes-partial.html",
    "libreoffice-swriter-pagenumbers.html",
]


# ------------------------------------------------------------- sources, no database


def test_generic_heading_becomes_page_prefixed_query():
    rng = random.Random(0)
    queries = {
        weak_query(Section("CREATE INDEX", "Parameters", "x " * 100), rng).query for _ in range(20)
    }
    assert "CREATE INDEX: Parameters" in queries
    assert not any(q == "Parameters" for q in queries)


def test_first_sentence_query_is_removed_from_its_positive():
    sentence, rest = first_sentence("VACUUM reclaims storage. It also updates statistics.")
    assert sentence == "VACUUM reclaims storage." and rest == "It also updates statistics."
    body = "VACUUM reclaims storage occupied by dead tuples. " + "More text follows. " * 10
    rng = random.Random(3)
    for _ in range(30):
        weak = weak_query(Section("p", "", body), rng)
        assert weak.kind == "sentence" and weak.query not in weak.positive


def test_feedback_source_keeps_questions_with_a_confirmed_passage():
    queries = feedback_queries(
        [
            ("how to vacuum?", ["VACUUM reclaims storage"], ["pg_dump"]),
            ("x", [], ["y"]),
            ("  ", ["z"], []),
        ]
    )
    assert [q.question for q in queries] == ["how to vacuum?"]
    assert queries[0].negative_texts == ("pg_dump",)
    hit = Candidate(
        chunk_id=1, document_id=1, document_name="", text="VACUUM reclaims storage", context=""
    )
    miss = Candidate(chunk_id=2, document_id=2, document_name="", text="pg_dump", context="")
    assert is_positive(queries[0], hit) and not is_positive(queries[0], miss)


# ------------------------------------------------------------- on the real pipeline


def _ingest(kb, names):
    from ingestion.services import document_create, documents_ingest_batch

    ids = []
    for name in names:
        with transaction.atomic():
            result = document_create(
                knowledge_base=kb,
                fileobj=io.BytesIO((FIXTURES / name).read_bytes()),
                name=name,
                enqueue=False,
            )
        ids.append(result.document.pk)
    documents_ingest_batch(document_ids=ids)
    return ids


@pytest.fixture
def tiny_kb(make_user, make_kb):
    owner = make_user()
    kb = make_kb(owner, name="tiny", embedders=["use"])
    _ingest(kb, TINY_CORPUS)
    other = make_kb(owner, name="other", embedders=["use"])
    _ingest(other, ["postgresql-indexes-partial.html"])  # same text, another knowledge base
    return kb


def _inverted(model: LinearRanker) -> LinearRanker:
    return LinearRanker(
        features=model.features,
        weights={lang: tuple(-w for w in ws) for lang, ws in model.weights.items()},
    )


@pytest.mark.django_db(transaction=True)
def test_short_training_run_measurably_improves_held_out_ranking(tiny_kb):
    queries = weak_queries_from_knowledge_base(tiny_kb, limit=80, seed=1)
    assert len(queries) >= 20
    rows = label_rows(tiny_kb, queries)
    # one knowledge base's text never reaches another's training data
    assert {c.knowledge_base_id for r in rows for c in r["candidates"]} == {tiny_kb.pk}
    assert sum(any(r["labels"]) for r in rows) >= 0.8 * len(rows)

    # Uploaded QA pairs: the answer document's chunks are the positives.
    from ingestion.models import Document, QAPair

    doc = Document.objects.get(knowledge_base=tiny_kb, original_name=TINY_CORPUS[0])
    QAPair.objects.create(
        knowledge_base=tiny_kb,
        question="How do WITH queries (common table expressions) work?",
        document=doc,
        document_name=doc.original_name,
    )
    (qa,) = qa_pair_queries(tiny_kb)
    (qa_row,) = label_rows(tiny_kb, [qa])
    assert qa.positive_document_ids == {doc.pk} and any(qa_row["labels"])
    assert all(
        label == (c.document_id == doc.pk)
        for c, label in zip(qa_row["candidates"], qa_row["labels"], strict=True)
    )

    start = _inverted(LinearRanker.load(DEFAULT_MODEL))  # a deliberately bad starting point
    model, report = fit_language_models({"tiny": rows}, seed=0, base=start, l2=1e-4, steps=150)
    _, held_out = split(rows, seed=0)
    before, after = ranking_metrics(held_out, start), ranking_metrics(held_out, model)
    assert after["ndcg@10"] >= before["ndcg@10"] + 0.1, (before, after)
    for metrics in report["metrics"].values():
        assert metrics["trained"]["ndcg@10"] > metrics["base"]["ndcg@10"]


@pytest.mark.django_db(transaction=True)
def test_train_reranker_activates_only_a_better_model_and_can_switch_back(
    tiny_kb, tmp_path, settings, monkeypatch
):
    from retrieval.models import RerankerModel, TrainingStatus
    from retrieval.tasks import train_kb_reranker
    from retrieval.training import service

    settings.MEDIA_ROOT = str(tmp_path)
    tiny_kb.reranker = "none"
    tiny_kb.save()
    # The model in use is bad: the new one must beat it and be switched on.
    bad = tmp_path / "bad"
    bad.mkdir()
    _inverted(LinearRanker.load(DEFAULT_MODEL)).save(bad / service.MODEL_FILE)
    RerankerModel.objects.create(
        knowledge_base=tiny_kb,
        path=str(bad),
        is_active=True,
        previous_reranker="none",
        status=TrainingStatus.READY,
    )
    out = io.StringIO()
    call_command(
        "train_reranker",
        "--kb",
        "tiny",
        "--max-pairs",
        "60",
        "--epochs",
        "1",
        stdout=out,
        stderr=io.StringIO(),
    )
    text = out.getvalue()
    assert "held-out nDCG@10" in text and "better" in text
    run = RerankerModel.objects.active_for(tiny_kb.pk)
    assert run.path != str(bad) and run.status == TrainingStatus.READY
    card = json.loads((Path(run.path) / "card.json").read_text())
    assert card["better"] and card["held_out_ndcg@10"]["new"] > card["held_out_ndcg@10"]["current"]
    assert Path(run.path).is_relative_to(tmp_path / "rerankers")
    tiny_kb.refresh_from_db()
    assert tiny_kb.reranker == service.KB_RERANKER

    # A model that is not better (impossible bar) is kept on disk but not activated.
    monkeypatch.setattr(service, "MIN_GAIN", 1.0)
    rejected = RerankerModel.objects.get(pk=train_kb_reranker(tiny_kb.pk))
    assert rejected.status == TrainingStatus.REJECTED and not rejected.is_active
    assert rejected.progress == 100 and "not better" in rejected.message
    assert RerankerModel.objects.active_for(tiny_kb.pk).pk == run.pk

    call_command("train_reranker", "--kb", "tiny", "--deactivate", stdout=io.StringIO())
    tiny_kb.refresh_from_db()
    assert tiny_kb.reranker == "none" and RerankerModel.objects.active_for(tiny_kb.pk) is None
