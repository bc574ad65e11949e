"""Abstention: signals of the final head, a calibrated probability, and where the threshold
comes from (setting > owner > calibrated from QA pairs > the model's default)."""

import pytest

from chat.abstention import (
    AbstentionModel,
    assess,
    calibrate_from_qa_pairs,
    features,
    fit_logistic,
    threshold_for,
)
from ingestion.models import KnowledgeBase, QAPair
from ragapp.models import ApiToken
from retrieval.types import Candidate
from tests.conftest import ingest_texts


def head(*texts, cosine=0.5, support=0.5):
    return [
        Candidate(
            i,
            i,
            "d.md",
            t,
            t,
            signals={"dense:minilm": cosine, "dense:use": cosine / 2, "keyword": 3.0},
            support=support,
        )
        for i, t in enumerate(texts)
    ]


def test_features_read_support_main_dense_signal_and_coverage():
    values = features("What is a partial index?", head("A B-tree index keeps keys sorted."))
    assert values["support"] == 0.5
    assert values["dense"] == 0.5  # MiniLM: the largest English fusion weight
    assert values["coverage"] == pytest.approx(0.5)  # "index" but not "partial"
    full = features("What is a partial index?", head("A partial index covers some rows."))
    assert full["coverage"] == 1.0
    zh = features("如何插入页码？", head("在页脚中插入页码字段。", cosine=0.6))
    assert zh["dense"] == 0.3 and zh["coverage"] == 1.0  # USE for Chinese


def test_sentence_coverage_and_names_the_head_does_not_mention():
    question = "What is the value of ASN1_MAX_NAME_SIZE in libtasn1 4.19?"
    scattered = head(
        "ASN1_MAX_NAME_SIZE limits the length of a node name. Libtasn1 4.18 was released "
        "in 2021. The return value is zero on success."
    )
    values = features(question, scattered)
    # value, asn1_max_name_size, libtasn1, 19: the passage has three of them,
    assert values["coverage"] == pytest.approx(3 / 4)
    assert values["sentence"] == pytest.approx(1 / 4)  # but no sentence more than one,
    assert values["unnamed"] == 1.0  # and it never names 4.19
    answer = head("In libtasn1 4.19 the value of ASN1_MAX_NAME_SIZE is 64.")
    assert features(question, answer)["sentence"] == 1.0
    assert features(question, answer)["unnamed"] == 0.0
    zh = features("如何插入页码？", head("打开页面设置。在页脚中插入页码字段。"))
    assert zh["sentence"] == 1.0 and zh["unnamed"] == 0.0


def test_fitted_model_separates_and_is_monotonic():
    good = {"support": 0.7, "dense": 0.6, "coverage": 0.9, "absent": 0.0, "specific": 0.0}
    good |= {"sentence": 0.9, "unnamed": 0.0}
    bad = {"support": 0.2, "dense": 0.2, "coverage": 0.1, "absent": 0.5, "specific": 1.0}
    bad |= {"sentence": 0.1, "unnamed": 1.0}
    rows = [(good, True)] * 20 + [(bad, False)] * 20
    entry = fit_logistic(rows)
    m = AbstentionModel({"en": {**entry, "threshold": 0.5}})
    high = m.probability(good, "en")
    low = m.probability(bad, "en")
    assert high > 0.9 > 0.1 > low


def test_threshold_precedence(settings, make_user, make_kb, db):
    kb = make_kb(make_user(), "a")
    default, source = threshold_for([kb], "en")
    assert source == "default" and 0 < default < 1
    kb.abstain_calibrated = 0.42
    assert threshold_for([kb], "en") == (0.42, "calibrated")
    kb.abstain_threshold = 0.7
    assert threshold_for([kb], "en") == (0.7, "owner")
    settings.RAG_ABSTAIN_THRESHOLD = 0.1
    assert threshold_for([kb], "en") == (0.1, "setting")


def test_no_head_is_never_answerable(make_user, make_kb, db):
    kb = make_kb(make_user(), "a")
    assert not assess("anything?", [], knowledge_bases=[kb]).answerable


@pytest.mark.models
@pytest.mark.django_db
def test_qa_pairs_calibrate_the_threshold_and_the_owner_sees_and_overrides_it(
    client, make_user, make_kb
):
    docs = {
        f"topic{i}.md": f"# Topic {i}\n\nThe {w} command manages {w} files on the server."
        for i, w in enumerate(
            [
                "backup",
                "restore",
                "vacuum",
                "index",
                "cluster",
                "analyze",
                "reindex",
                "dump",
                "copy",
                "listen",
                "notify",
                "prepare",
            ]
        )
    }
    kb = ingest_texts(make_kb(make_user("owner"), "manuals"), docs)
    for name in docs:
        word = docs[name].split("The ")[1].split()[0]
        QAPair.objects.create(
            knowledge_base=kb,
            question=f"What does the {word} command manage?",
            document_name=name,
        )
    report = calibrate_from_qa_pairs(knowledge_base=kb)
    kb.refresh_from_db()
    assert report["pairs"] == 12 and kb.abstain_calibrated == report["calibrated"]
    assert report["answered_share"] >= 0.9
    client.force_login(kb.owner)
    page = client.get(f"/kb/{kb.pk}/settings/").content.decode()
    assert f"{kb.abstain_calibrated:.3f}" in page and "calibrated from 12" in page
    response = client.post(
        f"/kb/{kb.pk}/settings/",
        {"name": kb.name, "description": "", "abstain_threshold": "0.8"},
    )
    assert response.status_code == 302
    assert KnowledgeBase.objects.get(pk=kb.pk).abstain_threshold == 0.8
    bad = client.post(
        f"/kb/{kb.pk}/settings/", {"name": kb.name, "description": "", "abstain_threshold": "nan"}
    )
    assert bad.status_code == 200 and KnowledgeBase.objects.get(pk=kb.pk).abstain_threshold == 0.8


@pytest.mark.django_db
def test_api_sets_and_refuses_abstain_threshold(client, make_user, make_kb):
    kb = make_kb(make_user("owner"), "kb")
    _, raw = ApiToken.issue(kb.owner)
    auth = {"Authorization": f"Bearer {raw}"}
    ok = client.patch(
        f"/api/v1/knowledge-bases/{kb.pk}",
        {"abstain_threshold": 0.6},
        content_type="application/json",
        headers=auth,
    )
    assert ok.status_code == 200 and ok.json()["abstain_threshold"] == 0.6
    for bad in ('{"abstain_threshold": NaN}', '{"abstain_threshold": 1.5}'):
        response = client.patch(
            f"/api/v1/knowledge-bases/{kb.pk}", bad, content_type="application/json", headers=auth
        )
        assert response.status_code == 422


@pytest.mark.django_db
def test_absent_words_are_names_the_documents_never_mention(make_user, make_kb):
    from chat.abstention import absent_signals, is_specific
    from retrieval.recall import absent_words
    from tests.conftest import make_chunk

    kb = make_kb(make_user(), "a")
    doc = kb.documents.create(original_name="d.md", content_hash="x" * 64, status="ready")
    from django.contrib.postgres.search import SearchVector

    from retrieval.text import TS_CONFIG

    chunk = make_chunk(kb, doc, 0, "pg_dump writes a consistent backup of one database.")
    type(chunk).objects.filter(pk=chunk.pk).update(
        search_vector=SearchVector("search_text", config=TS_CONFIG)
    )
    words, looked_up = absent_words(knowledge_bases=[kb], query="How do I back up a database?")
    assert words == []  # "back up" is the text's "backup"
    words, looked_up = absent_words(knowledge_bases=[kb], query="Can pg_dump write to a YubiKey?")
    assert words == ["yubikey"] and looked_up == 3
    assert absent_signals(words, looked_up) == {"absent": 1 / 3, "specific": 1.0}
    assert is_specific("yubikey") and is_specific("rs232") and not is_specific("licence")
    assert not is_specific("负责")


@pytest.mark.models
@pytest.mark.django_db
def test_chinese_questions_are_judged_by_e5_reading_the_top_passage(settings, make_user, make_kb):
    from chat.abstention import model, model_key

    kb = make_kb(make_user(), "a")
    passage = "打开“插入”菜单，选择“页码”，再选择页码在页面上的位置。"
    top = head(passage, cosine=0.6, support=0.6)
    on_topic = assess("如何在文档中插入页码？", top, knowledge_bases=[kb])
    off_topic = assess("澳大利亚的首都是哪里？", top, knowledge_bases=[kb])
    assert model_key("zh") == "zh+e5" and model_key("en") == "en"  # English goes without
    assert on_topic.features["judge"] > off_topic.features["judge"]
    assert on_topic.probability > off_topic.probability
    assert on_topic.threshold == model().entry("zh+e5")["threshold"]
    assert (
        "judge" not in assess("How do I insert page numbers?", top, knowledge_bases=[kb]).features
    )

    settings.RAG_ABSTAIN_JUDGE = {}  # not configured (or no AVX2): the model without it
    plain = assess("如何在文档中插入页码？", top, knowledge_bases=[kb])
    assert "judge" not in plain.features and model_key("zh") == "zh"
    assert plain.threshold == model().entry("zh")["threshold"]
