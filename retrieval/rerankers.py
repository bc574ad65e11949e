"""Old home of the passage rerankers, kept so that settings naming
`retrieval.rerankers.<Backend>` keep working for one release: use retrieval.rerank.backends."""

from retrieval.rerank.backends import (
    CrossEncoderReranker,
    EmbeddingSimilarityReranker,
    NoReranker,
    RemoteReranker,
)
from retrieval.rerank.base import Reranker, RerankerError

__all__ = [
    "CrossEncoderReranker",
    "EmbeddingSimilarityReranker",
    "NoReranker",
    "RemoteReranker",
    "Reranker",
    "RerankerError",
]
