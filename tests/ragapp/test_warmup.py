"""Models load when a process starts (ragapp.warmup), readiness says "warming" meanwhile,
and the hit-testing page says so instead of hanging."""

from __future__ import annotations

import threading
import time

import pytest
from django.test import override_settings

from ragapp import health, warmup


@pytest.fixture(autouse=True)
def fresh_state():
    warmup._reset()
    yield
    warmup.wait_until_warm(30)
    warmup._reset()


@pytest.fixture
def slow_warm_up(monkeypatch):
    """A warm-up whose one step runs until the test releases it."""
    release = threading.Event()
    monkeypatch.setattr(warmup, "_steps", lambda: [("minilm", lambda: release.wait(30))])
    started = warmup.start_background_warm_up(force=True)
    assert started
    yield release
    release.set()


def test_warm_up_is_off_under_pytest():
    from django.conf import settings

    assert settings.RAG_WARM_UP is False
    assert warmup.start_background_warm_up() is False
    assert warmup.warm_state()["status"] == warmup.IDLE
    assert health.check_models() == (True, warmup.readiness_check()[1])


@pytest.mark.models
@pytest.mark.django_db
def test_warm_up_loads_the_real_models_and_a_second_call_is_instant():
    state = warmup.warm_up()
    assert state["status"] == warmup.READY, state["error"]
    for step in ("minilm", "use", "jieba", "reranker:default", "reranker:sentence-sim"):
        assert step in state["done"]
    from retrieval.backends import get_embedder

    assert get_embedder("minilm")._model is not None and get_embedder("use")._model is not None
    t0 = time.perf_counter()
    again = warmup.warm_up()
    assert time.perf_counter() - t0 < 0.5
    assert again["status"] == warmup.READY and again["started_at"] == state["started_at"]
    ok, detail = health.check_models()
    assert ok and detail.startswith("ready")


@pytest.mark.django_db
def test_a_knowledge_base_that_cannot_be_searched_does_not_fail_the_warm_up(
    make_user, make_kb, caplog
):
    make_kb(make_user(), embedders=["gone"])  # an embedder no longer configured
    with override_settings(RAG_DEFAULT_EMBEDDERS=[], RAG_CLAIM_SCORER="none"):
        state = warmup.warm_up()
    assert state["status"] == warmup.READY, state["error"]
    assert state["done"][-1] == "search" and "jieba" in state["done"]
    assert "sample search failed" in caplog.text


def test_readiness_says_warming_until_the_models_are_loaded(slow_warm_up, client, monkeypatch):
    monkeypatch.setattr(
        health, "READINESS_CHECKS", [health.ReadinessCheck("models", health.check_models)]
    )
    deadline = time.monotonic() + 5
    while warmup.warm_state()["loading"] != "minilm" and time.monotonic() < deadline:
        time.sleep(0.01)
    result = health.readiness_report().checks["models"]
    assert not result.ok and result.detail.startswith("warming: loading minilm")
    assert client.get("/readyz").status_code == 503
    assert client.get("/warmup.json").json()["status"] == "warming"

    slow_warm_up.set()
    assert warmup.wait_until_warm(10)
    result = health.readiness_report().checks["models"]
    assert result.ok and result.detail.startswith("ready")
    assert client.get("/readyz").status_code == 200
    assert client.get("/warmup.json").json()["status"] == "ready"


def test_wait_until_warm_times_out_while_warming(slow_warm_up):
    t0 = time.monotonic()
    assert warmup.wait_until_warm(0.2) is False
    assert 0.15 < time.monotonic() - t0 < 2
    assert warmup.is_warming()
    slow_warm_up.set()
    assert warmup.wait_until_warm(10) is True


def test_a_failing_model_makes_readiness_fail_with_the_error(monkeypatch):
    def broken():
        raise OSError("weights not found")

    monkeypatch.setattr(warmup, "_steps", lambda: [("bge", broken), ("jieba", lambda: None)])
    state = warmup.warm_up()
    assert state["status"] == warmup.FAILED and state["done"] == ["jieba"]
    ok, detail = health.check_models()
    assert not ok and "bge: OSError: weights not found" in detail
    assert warmup.wait_until_warm(0)  # nothing left to wait for


def test_start_background_warm_up_runs_once_per_process(monkeypatch):
    calls = []
    monkeypatch.setattr(warmup, "_steps", lambda: calls.append(1) or [])
    with override_settings(RAG_WARM_UP=True):
        assert warmup.start_background_warm_up() is True
        assert warmup.wait_until_warm(10)
        assert warmup.start_background_warm_up() is False
    assert calls == [1] and warmup.warm_state()["status"] == warmup.READY


def test_prefork_parent_does_not_warm_but_a_solo_worker_does(monkeypatch):
    started = []
    monkeypatch.setattr(warmup, "start_background_warm_up", lambda: started.append(1))

    class Worker:
        pool_cls = "prefork"

    warmup._on_worker_init(sender=Worker())
    assert started == []
    Worker.pool_cls = "threads"
    warmup._on_worker_init(sender=Worker())
    warmup._on_worker_process_init(sender="celery@host")  # a pool child
    assert started == [1, 1]


@pytest.mark.django_db
def test_hit_test_shows_the_loading_notice_while_warming(client, make_user, make_kb):
    user = make_user()
    kb = make_kb(user, embedders=[])
    client.force_login(user)
    warmup._state["status"] = warmup.WARMING

    page = client.get(f"/kb/{kb.pk}/hit-test/", {"q": "backup"}).content.decode()
    assert "Loading the models after a restart" in page
    assert 'id="warmup-notice"' in page and "js/hit_test.js" in page
    assert 'id="recall-list"' not in page  # no search ran

    warmup._state["status"] = warmup.READY
    page = client.get(f"/kb/{kb.pk}/hit-test/", {"q": "backup"}).content.decode()
    assert "Loading the models after a restart" not in page
    assert 'id="recall-list"' in page
    # No question, no notice: nothing waits.
    warmup._state["status"] = warmup.WARMING
    page = client.get(f"/kb/{kb.pk}/hit-test/").content.decode()
    assert 'id="warmup-notice"' not in page


def test_make_run_waits_for_several_ready_answers_in_a_row(monkeypatch):
    """Each gunicorn worker answers /readyz for itself: one 200 from the warm one is not
    enough while the other still loads its models."""
    from ragapp import devservers

    answers = iter([True, False, True, True, True, True])
    monkeypatch.setattr(devservers, "_ready", lambda target, port: next(answers))
    ready = devservers._ready_in_a_row("127.0.0.1", 8000, times=4)
    assert [ready() for _ in range(6)] == [False, False, False, False, False, True]
