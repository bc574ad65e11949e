"""Old home of the learned second stage, kept so that settings naming
`retrieval.second_stage.LearnedReranker` or `.KnowledgeBaseReranker` keep working for one
release: use retrieval.rerank.learned (and retrieval.rerank.linear for the model)."""

from retrieval.rerank.learned import KnowledgeBaseReranker, LearnedReranker
from retrieval.rerank.linear import DEFAULT_MODEL, FEATURES, LinearRanker, features

__all__ = [
    "DEFAULT_MODEL",
    "FEATURES",
    "KnowledgeBaseReranker",
    "LearnedReranker",
    "LinearRanker",
    "features",
]
