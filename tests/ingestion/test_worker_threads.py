"""Prefork worker processes share the cores: each gets cores / N math-library threads."""

import os

import pytest
from celery.signals import worker_init

from ingestion.management.commands.bench_batch import percentiles, small_files
from ingestion.tasks import share_cores_between_processes


class Worker:
    pool_cls = "prefork"
    concurrency = 2


@pytest.fixture
def no_omp(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)


def test_two_prefork_processes_on_two_cores_get_one_thread_each(no_omp):
    share_cores_between_processes(sender=Worker())
    assert os.environ["OMP_NUM_THREADS"] == "1"


def test_the_cores_are_divided_among_the_processes(no_omp, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    share_cores_between_processes(sender=Worker())
    assert os.environ["OMP_NUM_THREADS"] == "4"


def test_the_operators_value_is_kept(no_omp, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    share_cores_between_processes(sender=Worker())
    assert os.environ["OMP_NUM_THREADS"] == "3"


@pytest.mark.parametrize(("pool", "concurrency"), [("solo", 1), ("threads", 4), ("prefork", 1)])
def test_one_process_keeps_every_core(no_omp, pool, concurrency):
    worker = Worker()
    worker.pool_cls, worker.concurrency = pool, concurrency
    share_cores_between_processes(sender=worker)
    assert "OMP_NUM_THREADS" not in os.environ


def test_the_worker_init_signal_applies_it(no_omp):
    # ingestion.apps connects the handler: a real worker sends this before its pool forks.
    worker_init.send(sender=Worker())
    assert os.environ["OMP_NUM_THREADS"] == "1"


def test_bench_batch_generates_distinct_small_files():
    files = small_files(30)
    assert len({data for _, data in files}) == 30
    assert {name.rsplit(".", 1)[1] for name, _ in files} == {"txt", "md", "html"}
    assert all(len(data) < 10_000 for _, data in files)
    assert small_files(30) == files  # the same files every run


def test_bench_batch_percentiles():
    row = percentiles([0.01 * i for i in range(1, 101)])
    assert row["n"] == 100
    assert row["p50_ms"] == pytest.approx(505.0)
    assert row["p95_ms"] == pytest.approx(950.0)
    assert row["max_ms"] == pytest.approx(1000.0)
    assert percentiles([]) == {"n": 0}


def test_a_second_stage_task_past_its_time_limit_queues_the_rest(monkeypatch):
    """The vectors stored so far stay (each batch commits); the next message goes on."""
    from celery.exceptions import SoftTimeLimitExceeded

    from ingestion import tasks

    def too_long(*, document_id):
        raise SoftTimeLimitExceeded()

    sent = []
    monkeypatch.setattr(tasks, "document_embed_for_rerank", too_long)
    monkeypatch.setattr(
        tasks.embed_for_rerank, "apply_async", lambda args, **kw: sent.append((args, kw))
    )
    assert tasks.embed_for_rerank(7) == -1
    assert sent == [((7,), {"priority": tasks.RERANK_EMBEDDING_PRIORITY})]
