"""The second stage lives in one package (retrieval.rerank): serving never imports training or
chat, every backend shares one `rerank`, and the old settings paths still resolve."""

from __future__ import annotations

import subprocess
import sys

from django.utils.module_loading import import_string

from retrieval.rerank.backends import (
    CrossEncoderReranker,
    EmbeddingSimilarityReranker,
    NoReranker,
    RemoteReranker,
)
from retrieval.rerank.base import BaseReranker
from retrieval.rerank.learned import KnowledgeBaseReranker, LearnedReranker
from retrieval.types import Candidate
from tests.conftest import ROOT


def test_serving_imports_neither_training_nor_chat():
    code = (
        "import django, os, sys\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'ragapp.settings')\n"
        "django.setup()\n"
        "before = set(sys.modules)\n"
        "import retrieval.rerank.learned, retrieval.rerank.backends, retrieval.rerank.mixed\n"
        "import retrieval.services\n"
        "new = set(sys.modules) - before\n"
        "bad = sorted(m for m in new if m.startswith(('retrieval.training', 'chat')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"serving imported: {out.stdout.strip()}"


def test_every_backend_shares_the_one_rerank():
    for backend in (
        CrossEncoderReranker,
        EmbeddingSimilarityReranker,
        RemoteReranker,
        LearnedReranker,
        KnowledgeBaseReranker,
    ):
        assert issubclass(backend, BaseReranker)
        assert backend.rerank is BaseReranker.rerank, backend
    assert issubclass(NoReranker, BaseReranker)  # keeps the first-stage order on purpose


def test_old_settings_paths_still_resolve_to_the_same_backends():
    assert import_string("retrieval.second_stage.LearnedReranker") is LearnedReranker
    assert import_string("retrieval.second_stage.KnowledgeBaseReranker") is KnowledgeBaseReranker
    assert import_string("retrieval.rerankers.NoReranker") is NoReranker
    assert import_string("retrieval.rerankers.CrossEncoderReranker") is CrossEncoderReranker


def test_learned_reranker_orders_candidates_by_its_model_scores():
    reranker = LearnedReranker(name="default")
    candidates = [
        Candidate(
            chunk_id=i,
            document_id=i,
            document_name="d",
            text=text,
            context=text,
            recall_rank=i + 1,
            recall_score=1.0 / (i + 1),
            signals={"keyword": s},
        )
        for i, (text, s) in enumerate(
            [("cats and dogs", 0.1), ("partial index on a table", 9.0), ("nothing here", None)]
        )
    ]
    ranked = reranker.rerank("partial index", candidates)
    scores = reranker.candidate_scores("partial index", candidates)
    assert [c.chunk_id for c in ranked] == sorted(range(3), key=lambda i: -scores[i])
    assert ranked[0].chunk_id == 1
    assert reranker.rerank("partial index", candidates, top_k=1) == ranked[:1]
