"""Shared fixtures. Tests run against the real PostgreSQL+pgvector and Redis that
`make test` starts (ragapp.devservers); nothing here mocks the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def make_user(db, django_user_model):
    counter = {"n": 0}

    def make(username: str | None = None, **extra):
        counter["n"] += 1
        username = username or f"user{counter['n']}"
        return django_user_model.objects.create_user(
            username=username, password="pw-Test-1234", **extra
        )

    return make


@pytest.fixture
def make_kb(db):
    from ingestion.models import KnowledgeBase

    def make(owner, name: str = "kb", **extra):
        return KnowledgeBase.objects.create(owner=owner, name=name, **extra)

    return make


def _wait_for_worker(proc: subprocess.Popen, timeout: float = 60) -> None:
    from ragapp.celery import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {proc.returncode}")
        if app.control.ping(timeout=0.5):
            return
    raise RuntimeError("celery worker did not answer ping")


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real Celery worker process (not eager mode) on pytest-django's test database."""
    from django.db import connection

    log = tmp_path_factory.mktemp("worker") / "worker.log"
    env = dict(os.environ)
    env["RAG_TEST_DATABASE_NAME"] = connection.settings_dict["NAME"]
    env["RAG_ALLOW_LOCAL_URLS"] = "1"  # the URL tests serve pages from 127.0.0.1
    # The stale-document sweep runs once at start only: a periodic sweep (SELECT ... FOR
    # UPDATE on documents) can deadlock with the TRUNCATE that flushes the database after a
    # transactional test. tests/ingestion/test_recovery.py runs its own sweeping workers.
    env["RAG_INGEST_SWEEP_SECONDS"] = "86400"
    env.update(getattr(celery_worker_process, "extra_env", {}))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "ragapp",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
                "-Q",
                "celery,ingestion,training",
                "--hostname",
                f"test-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_worker(proc)
        proc.log_path = log
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def wait_for_documents(ids, timeout: float = 180):
    """Poll until every document is ready or failed; return them by id."""
    from ingestion.models import Document, DocumentStatus

    deadline = time.monotonic() + timeout
    while True:
        docs = {d.pk: d for d in Document.objects.filter(pk__in=list(ids))}
        if all(d.status in (DocumentStatus.READY, DocumentStatus.FAILED) for d in docs.values()):
            return docs
        if time.monotonic() > deadline:
            states = {d.original_name: (d.status, d.progress) for d in docs.values()}
            raise AssertionError(f"documents not finished in {timeout}s: {states}")
        time.sleep(0.3)


def make_chunk(kb, doc, ordinal: int, text: str, **extra):
    """A chunk written directly (no pipeline), with its keyword-search columns filled in."""
    from ingestion.models import Chunk
    from retrieval.text import segment

    return Chunk.objects.create(
        document=doc,
        knowledge_base=kb,
        ordinal=ordinal,
        text=text,
        search_text=segment(text),
        search_length=len(segment(text).split()),
        **extra,
    )


def ingest_texts(kb, texts: dict[str, str]):
    """Ingest {file name: text} into kb in-process through the real pipeline."""
    import io

    from ingestion.services import document_create, documents_ingest_batch

    ids = [
        document_create(
            knowledge_base=kb, fileobj=io.BytesIO(text.encode()), name=name, enqueue=False
        ).document.pk
        for name, text in texts.items()
    ]
    documents_ingest_batch(document_ids=ids)
    return kb


def pytest_configure(config):
    """A fast password hasher: PBKDF2's 1,000,000 rounds cost ~0.3 s per created user and
    login, and the suite creates hundreds. Tests that check hashing set their own."""
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if os.environ.get("RAG_TEST_FAST") == "1":
        _configure_fast_mode(settings)


FAST_EMBEDDER = "hash"


def _configure_fast_mode(settings) -> None:
    """`make test-fast` (RAG_TEST_FAST=1): new knowledge bases, the claim scorer and the
    sentence similarity embed with the deterministic HashingEmbedder, and loading a real
    model fails the test, so a test that needs one must be marked `models` (and is then
    deselected). The real embedders stay configured: their vector indexes are created by
    the migrations as always, next to the 64-d one of "hash"."""
    from retrieval import embedders
    from retrieval.rerank import backends as rerankers

    settings.RAG_EMBEDDERS = {
        **settings.RAG_EMBEDDERS,
        FAST_EMBEDDER: {
            "BACKEND": "retrieval.embedders.HashingEmbedder",
            "DIMENSION": 64,
            "OPTIONS": {},
        },
    }
    settings.RAG_DEFAULT_EMBEDDERS = [FAST_EMBEDDER]
    settings.RAG_RERANK_EMBEDDERS = []
    # FAQ answers and gaps compare questions with the knowledge base's own ("hash").
    settings.RAG_QUESTION_EMBEDDERS = []
    sentence_sim = settings.RAG_RERANKERS["sentence-sim"]
    settings.RAG_RERANKERS = {
        **settings.RAG_RERANKERS,
        "sentence-sim": {
            **sentence_sim,
            "OPTIONS": {**sentence_sim.get("OPTIONS", {}), "embedder": FAST_EMBEDDER},
        },
    }

    def refuse(self):
        raise RuntimeError(
            f"RAG_TEST_FAST: {type(self).__name__} {getattr(self, 'name', '')!r} tried to load "
            "a real model; mark the test `models` (make test-fast deselects those)."
        )

    for backend in (
        embedders.SentenceTransformerEmbedder,
        embedders.UniversalSentenceEncoderEmbedder,
        embedders.E5Embedder,
        rerankers.CrossEncoderReranker,
    ):
        backend._load = refuse


@pytest.fixture(scope="session", autouse=True)
def _fresh_cache():
    """Django's cache is the embedded Redis, which outlives a test run: start each run with
    no rate-limit counters left by the previous one (ids repeat in a new test database)."""
    from django.core.cache import cache

    try:
        cache.clear()
    except Exception:  # noqa: BLE001 - no Redis: tests that need it say so themselves
        pass


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, plus: before it is dropped, end the sessions that
    other processes and threads of the run (the worker, the live server) may still hold."""
    yield
    with django_db_blocker.unblock():
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
