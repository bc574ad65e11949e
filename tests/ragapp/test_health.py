"""/healthz (liveness) and /readyz (readiness): what they check, who sees details, and that
the worker ping is not repeated per call."""

from __future__ import annotations

import threading

import pytest

from ragapp import health
from ragapp.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_worker_answer():
    health.forget_worker_answer()
    yield
    health.forget_worker_answer()


@pytest.fixture
def pings(monkeypatch):
    """Counts worker pings; a worker always answers."""
    calls = []

    def ping(app, timeout):
        calls.append(timeout)
        return [{"celery@test": {"ok": "pong"}}]

    monkeypatch.setattr("ragapp.health._ping_workers", ping)
    return calls


@pytest.fixture
def broker_down(monkeypatch):
    from celery import Celery

    unreachable = Celery("unreachable", broker="redis://127.0.0.1:1/0", set_as_current=False)
    monkeypatch.setattr("ragapp.health._app", lambda: unreachable)


def test_liveness_answers_without_pinging_or_querying(client, pings, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert pings == []


def test_liveness_stays_up_when_the_broker_is_down(client, broker_down):
    assert client.get("/healthz").status_code == 200


def test_anonymous_readiness_is_only_a_status(client, pings):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.slow
def test_anonymous_readiness_failure_hides_the_details(client, broker_down):
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "error"}
    text = response.content.decode()
    assert "detail" not in text and "Error" not in text and "broker" not in text


@pytest.mark.slow
def test_staff_see_each_part_and_why_it_fails(admin_client, broker_down):
    response = admin_client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker", "worker"]
    assert body["checks"]["database"] == {"ok": True, "detail": "ok"}
    assert "Error" in body["checks"]["broker"]["detail"]  # the exception text


def test_an_api_token_sees_the_details(client, make_user, pings):
    _, raw = ApiToken.issue(make_user("robot"), "monitoring")
    response = client.get("/readyz", headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 200
    assert response.json()["checks"]["worker"] == {"ok": True, "detail": "ok (1 worker)"}
    # A wrong token is anonymous, not an error.
    wrong = client.get("/readyz", headers={"Authorization": "Bearer nope"})
    assert wrong.json() == {"status": "ok"}


def test_non_staff_users_get_only_the_status(client, make_user, pings):
    client.force_login(make_user("plain"))
    assert client.get("/readyz").json() == {"status": "ok"}


def test_worker_ping_is_reused_within_the_cache_window(client, pings, monkeypatch):
    assert client.get("/readyz").status_code == 200
    assert client.get("/readyz").status_code == 200
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(health.check_worker_cached()))
        for _ in range(40)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 40 and all(ok for ok, _ in results)
    assert len(pings) == 1
    # Past the window it asks again.
    monkeypatch.setattr(health, "WORKER_PING_CACHE_SECONDS", 0.0)
    health.forget_worker_answer()
    health.check_worker_cached()
    health.check_worker_cached()
    assert len(pings) == 3


def test_readiness_checks_are_a_list_to_extend(client, admin_client, pings, monkeypatch):
    extra = health.ReadinessCheck("extra", lambda: (False, "not yet"))
    monkeypatch.setattr(health, "READINESS_CHECKS", [*health.READINESS_CHECKS, extra])
    response = admin_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["extra"]
    assert client.get("/readyz").json() == {"status": "error"}
