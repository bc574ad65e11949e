"""The second stage ("reranking"): after recall, a reranker re-reads each candidate with the
question and orders them. One name for one idea: a *reranker* is a backend configured in
settings.RAG_RERANKERS (retrieval.backends.get_reranker builds it); a *ranker* is the model
some rerankers hold (the linear ranker, the mixed cross-encoder ranker).

- base: the interface every backend implements, and the per-query scaling helpers;
- backends: rerankers that read bare passages (none, cross-encoder, remote, sentence similarity);
- linear: the linear ranker and its features;
- mixed: a fine-tuned cross-encoder on top of the linear ranker;
- learned: the rerankers that serve those models, and loading a trained model folder.

Training (retrieval.training) depends on this package; nothing here imports training or chat.
"""

from retrieval.rerank.base import BaseReranker, Reranker, RerankerError

__all__ = ["BaseReranker", "Reranker", "RerankerError"]
