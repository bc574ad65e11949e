"""One question over several knowledge bases: which of their settings apply (no database)."""

import pytest

from ingestion.models import KnowledgeBase
from retrieval.cutoffs import Cutoffs
from retrieval.services import cutoffs_for, settings_for


@pytest.fixture(autouse=True)
def site(settings):
    settings.RAG_RECALL_K = 50
    settings.RAG_DEFAULT_RERANKER = "default"
    settings.RAG_RERANK_TOP_K = 8
    settings.RAG_RERANK_MIN_SCORE = None
    settings.RAG_RERANK_MAX_DROP = None


def test_no_knowledge_base_uses_the_site_defaults():
    chosen = settings_for([])
    assert chosen.recall_k == 50 and chosen.reranker == "default" and chosen.llm_options == {}
    assert chosen.cutoffs == Cutoffs(top_k=8, min_score=None, max_drop=None)


def test_one_knowledge_base_uses_its_own_settings():
    kb = KnowledgeBase(
        recall_k=20,
        reranker="none",
        rerank_top_k=3,
        rerank_min_score=0.4,
        rerank_max_drop=0.5,
        llm_options={"temperature": 0.7},
    )
    chosen = settings_for([kb])
    assert chosen.recall_k == 20 and chosen.reranker == "none"
    assert chosen.cutoffs == Cutoffs(top_k=3, min_score=0.4, max_drop=0.5)
    assert chosen.llm_options == {"temperature": 0.7}


def test_several_take_the_largest_recall_and_the_most_permissive_cutoffs():
    first = KnowledgeBase(recall_k=20, rerank_top_k=3, rerank_min_score=0.4, rerank_max_drop=0.2)
    second = KnowledgeBase(recall_k=80, rerank_top_k=5, rerank_min_score=0.1, rerank_max_drop=0.6)
    for order in ([first, second], [second, first]):  # the first one no longer wins
        chosen = settings_for(order)
        assert chosen.recall_k == 80
        assert chosen.cutoffs == Cutoffs(top_k=5, min_score=0.1, max_drop=0.6)


def test_a_cutoff_applies_only_when_every_knowledge_base_has_one(settings):
    strict = KnowledgeBase(rerank_min_score=0.4, rerank_max_drop=0.2)
    default = KnowledgeBase()  # the site has no min score and no max drop
    assert settings_for([strict, default]).cutoffs == Cutoffs(top_k=8)
    settings.RAG_RERANK_MIN_SCORE = 0.3  # now the site default is a cut-off too
    assert settings_for([strict, default]).cutoffs.min_score == 0.3
    assert cutoffs_for([strict, default], top_k=2) == Cutoffs(top_k=2, min_score=0.3)


def test_reranker_and_llm_options_only_when_all_agree():
    same = [
        KnowledgeBase(reranker="none", llm_options={"model": "m"}),
        KnowledgeBase(reranker="none", llm_options={"model": "m"}),
    ]
    assert settings_for(same).reranker == "none"
    assert settings_for(same).llm_options == {"model": "m"}
    differ = [
        KnowledgeBase(reranker="none", llm_options={"model": "m"}),
        KnowledgeBase(reranker="kb", llm_options={}),
    ]
    assert settings_for(differ).reranker == "default"
    assert settings_for(differ).llm_options == {}
    # A knowledge base without its own reranker uses the site's: it agrees with "default".
    assert settings_for([KnowledgeBase(reranker="default"), KnowledgeBase()]).reranker == (
        "default"
    )
