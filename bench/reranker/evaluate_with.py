"""Run `manage.py evaluate` with the second-stage entries added to RAG_RERANKERS,
without editing settings:

    .venv/bin/python bench/reranker/evaluate_with.py ../shared/bench/tex-faq-zh \
        --reranker default --json /tmp/out.json
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragapp.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import override_settings  # noqa: E402

ENTRIES = {
    "default": {
        "BACKEND": "retrieval.rerank.learned.LearnedReranker",
        "OPTIONS": {
            "model_path": os.environ.get("RANKER", "retrieval/weights/default_ranker.json")
        },
    },
    "kb": {"BACKEND": "retrieval.rerank.learned.KnowledgeBaseReranker", "OPTIONS": {}},
}

with override_settings(RAG_RERANKERS={**settings.RAG_RERANKERS, **ENTRIES}):
    call_command("evaluate", *sys.argv[1:])
