from pathlib import Path

import numpy as np
import pytest

from retrieval.rerank.learned import KnowledgeBaseReranker, LearnedReranker
from retrieval.rerank.linear import DEFAULT_MODEL, FEATURES, LinearRanker, features
from retrieval.types import Candidate

WEIGHTS_DIR = Path(DEFAULT_MODEL).parent


def _cand(i, text, signals, kb=None, doc=None):
    return Candidate(
        chunk_id=i,
        document_id=i if doc is None else doc,
        document_name=f"d{i}",
        text=text,
        context=text,
        knowledge_base_id=kb,
        recall_rank=i + 1,
        recall_score=1.0 / (i + 1),
        signals=signals,
    )


def _english():
    return [
        _cand(
            0, "VACUUM reclaims storage of dead tuples", {"dense:minilm": 0.40, "dense:use": 0.3}
        ),
        _cand(
            1,
            "pg_dump writes a backup of one database",
            {"keyword": 9.0, "dense:minilm": 0.70, "dense:use": 0.6},
        ),
        _cand(2, "A B-tree index keeps keys sorted", {"keyword": 1.0, "dense:minilm": 0.20}),
    ]


def test_features_are_per_query_standardised_and_impute_missing_signals():
    x = features("how do I back up a database with pg_dump", _english())
    col = {name: i for i, name in enumerate(FEATURES)}
    assert x.shape == (3, len(FEATURES))
    assert x[:, col["keyword_z"]].mean() == pytest.approx(0.0, abs=1e-9)
    assert list(x[:, col["keyword_missing"]]) == [1.0, 0.0, 0.0]
    # dense:use missing for candidate 2: imputed below the lowest score the stage returned
    assert x[2, col["dense:use_minmax"]] == 0.0 and x[1, col["dense:use_minmax"]] == 1.0
    assert np.argmax(x[:, col["coverage"]]) == 1


def test_stage_that_did_not_run_contributes_nothing():
    cands = [
        _cand(i, t, {"keyword": s}) for i, (t, s) in enumerate([("全文检索", 3.0), ("表格", 1.0)])
    ]
    x = features("全文检索怎么用", cands)
    for name in ("dense:minilm_z", "dense:minilm_minmax", "dense:use_z"):
        assert not x[:, FEATURES.index(name)].any()


def test_exact_cosines_replace_imputation_and_sections_are_standardised():
    cands = _english()
    cands[2].signals.update({"cosine:use": 0.5})
    for c, section in zip(cands, (0.2, 0.5, 0.8), strict=True):
        c.signals.update({"section:minilm": section, "section:use": section})
    x = features("how do I back up a database with pg_dump", cands)
    col = {name: i for i, name in enumerate(FEATURES)}
    # candidate 2's exact USE cosine (0.5) sits between the other two (0.3, 0.6)
    assert x[2, col["dense:use_minmax"]] == pytest.approx(2 / 3)
    assert list(np.argsort(x[:, col["section:minilm_z"]])) == [0, 1, 2]
    assert x[:, col["section:use_z"]].mean() == pytest.approx(0.0, abs=1e-9)
    # a candidate without a section signal (older candidates) leaves the column at zero
    del cands[0].signals["section:use"]
    assert not features("pg_dump", cands)[:, col["section:use_z"]].any()


def test_second_stage_cosines_pick_their_own_weights_only_when_every_candidate_has_one():
    from retrieval.rerank.linear import weights_key

    cands = _english()
    query = "how do I back up a database with pg_dump"
    col = {name: i for i, name in enumerate(FEATURES)}
    assert weights_key(query, cands) == "en"
    assert not features(query, cands)[:, col["e5_z"]].any()
    for c, v in zip(cands, (0.2, 0.9, 0.5), strict=True):
        c.signals["cosine:e5"] = v
    cands[2].signals["dense:e5"] = cands[2].signals.pop("cosine:e5")  # a recall stage's
    assert weights_key(query, cands) == "en+e5" and weights_key("怎么备份", cands) == "zh+e5"
    x = features(query, cands)
    assert list(np.argsort(x[:, col["e5_z"]])) == [0, 2, 1] and x[1, col["e5_minmax"]] == 1.0
    plain = LinearRanker(features=FEATURES, weights={"en": tuple([0.0] * len(FEATURES))})
    assert plain.weights_key(query, cands) == "en"  # a model without them keeps its own
    del cands[0].signals["cosine:e5"]
    assert weights_key(query, cands) == "en" and not features(query, cands)[:, col["e5_z"]].any()


def test_several_chunks_of_one_document_are_counted():
    cands = [_cand(0, "a", {}, doc=7), _cand(1, "b", {}, doc=7), _cand(2, "c", {}, doc=8)]
    x = features("a b", cands)
    assert list(x[:, FEATURES.index("doc_chunks")]) == pytest.approx([np.log(2)] * 2 + [0.0])


def test_shipped_default_loads_and_puts_the_agreeing_candidate_first():
    reranker = LearnedReranker(name="default")
    out = reranker.rerank("how do I back up a database with pg_dump", _english())
    assert out[0].chunk_id == 1
    assert [c.rerank_score for c in out] == sorted((c.rerank_score for c in out), reverse=True)
    assert reranker.rerank("q", []) == []
    assert len(reranker.rerank("pg_dump", _english(), top_k=2)) == 2
    assert set(reranker.model().weights) == {"en", "zh", "en+e5", "zh+e5"}


def test_shipped_artifacts_fit_the_size_budget():
    sizes = [p.stat().st_size for p in WEIGHTS_DIR.rglob("*") if p.is_file()]
    assert sum(sizes) <= 25 * 1024 * 1024 and max(sizes) <= 20 * 1024 * 1024


def test_model_file_round_trips_and_refuses_unknown_features(tmp_path):
    model = LinearRanker(features=FEATURES, weights={"en": tuple(range(len(FEATURES)))})
    model.save(tmp_path / "m.json")
    assert LinearRanker.load(tmp_path / "m.json").weights["en"][3] == 3.0
    (tmp_path / "bad.json").write_text('{"features": ["telepathy"], "weights": {"en": [1]}}')
    with pytest.raises(ValueError, match="telepathy"):
        LinearRanker.load(tmp_path / "bad.json")


def test_score_of_bare_passages_uses_query_coverage():
    scores = LearnedReranker(name="default").score(
        "pg_dump backup", ["pg_dump writes a backup", "tables have columns"]
    )
    assert scores[0] > scores[1]


@pytest.mark.django_db
def test_knowledge_base_reranker_uses_the_active_model_else_the_default(
    make_user, make_kb, tmp_path
):
    from retrieval.models import RerankerModel

    kb = make_kb(make_user())
    reranker = KnowledgeBaseReranker(name="kb")
    cands = [
        _cand(i, t, s, kb=kb.pk)
        for i, (t, s) in enumerate([("alpha", {"keyword": 1.0}), ("beta", {"keyword": 5.0})])
    ]
    assert reranker.rerank("beta", cands)[0].chunk_id == 1  # the shipped default
    # An active model that prefers low keyword scores reverses the order.
    weights = [0.0] * len(FEATURES)
    weights[FEATURES.index("keyword_z")] = -1.0
    LinearRanker(features=FEATURES, weights={"en": tuple(weights)}).save(tmp_path / "ranker.json")
    RerankerModel.objects.create(knowledge_base=kb, path=str(tmp_path), is_active=True)
    assert reranker.rerank("beta", cands)[0].chunk_id == 0
    # Candidates of several knowledge bases: no single KB model applies.
    mixed = [cands[0], _cand(1, "beta", {"keyword": 5.0}, kb=kb.pk + 1)]
    assert reranker.rerank("beta", mixed)[0].chunk_id == 1


def test_query_tokens_are_found_in_passages_without_segmenting_them():
    from retrieval.text import segment, tokens_in

    passage = "在 debian/control 文件中设置维护者（Maintainer）字段，使用dh_make生成模板。"
    tokens = ["维护者", "维护", "maintainer", "control", "dh", "make", "rules", "软件包"]
    found = tokens_in(passage, tokens)
    assert found == {"维护者", "维护", "maintainer", "control", "dh", "make"}
    # the same answer as segmenting the passage with jieba
    assert found == {t for t in tokens if t in set(segment(passage).split())}
    # where jieba splits a word it could not place (字 段), the substring still finds it
    assert tokens_in(passage, ["字段"]) == {"字段"}
    assert tokens_in("Install the package with apt.", ["package", "pack", "apt"]) == {
        "package",
        "apt",
    }
