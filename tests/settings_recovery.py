"""Settings of the worker processes that tests/ingestion/test_recovery.py kills: the project's
settings plus an embedder slow enough to kill a worker in the middle of a document, and a
queue of their own, so that the session's worker never takes their tasks."""

import os
import time

from ragapp.settings import *  # noqa: F403
from ragapp.settings import RAG_EMBEDDERS
from retrieval.embedders import HashingEmbedder

RECOVERY_QUEUE = "recovery-test"


class SlowHashingEmbedder(HashingEmbedder):
    """The hashing test embedder, pausing before every batch (without progress calls, like a
    long OCR page), so that only the ingestion heartbeat shows the run is alive."""

    def __init__(self, *, seconds_per_batch: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seconds_per_batch = seconds_per_batch

    def embed_documents(self, texts):
        time.sleep(self.seconds_per_batch)
        return super().embed_documents(texts)


RAG_EMBEDDERS = {
    **RAG_EMBEDDERS,
    "slow": {
        "BACKEND": "tests.settings_recovery.SlowHashingEmbedder",
        "DIMENSION": 64,
        "OPTIONS": {"seconds_per_batch": float(os.environ.get("RAG_TEST_EMBED_PAUSE", "0"))},
    },
}
CELERY_TASK_ROUTES = {"ingestion.tasks.*": {"queue": RECOVERY_QUEUE}}
