"""Reachability of the parts the product needs, for /readyz, `make run` and `manage.py ingest`.

Liveness (/healthz) checks nothing here: it only shows that the process serves requests.
Readiness (/readyz) runs READINESS_CHECKS in order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection

# Seconds a worker ping answer is reused: every /readyz call would otherwise broadcast to
# all workers and wait for their replies, and a probe storm (or a load balancer per web
# process) would keep the broker busy. A failed ping is reused for less time, so that
# `make run` notices a worker that has just come up.
WORKER_PING_CACHE_SECONDS = 5.0
WORKER_PING_FAILURE_CACHE_SECONDS = 1.0


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:300]


def check_database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return False, _error(exc)


def check_pgvector() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
        return (True, f"ok ({row[0]})") if row else (False, "extension 'vector' is not installed")
    except Exception as exc:  # noqa: BLE001
        return False, _error(exc)


def _app():
    from ragapp.celery import app

    return app


def check_broker() -> tuple[bool, str]:
    app = _app()
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True, "ok"
    except Exception as exc:  # noqa: BLE001
        return False, _error(exc)


def _ping_workers(app, timeout: float) -> list:
    return app.control.ping(timeout=timeout)


def check_worker(timeout: float = 1.5) -> tuple[bool, str]:
    """Ask the workers now (a broadcast that waits `timeout` for replies)."""
    try:
        replies = _ping_workers(_app(), timeout)
    except Exception as exc:  # noqa: BLE001
        return False, _error(exc)
    if not replies:
        return False, "no Celery worker answered"
    return True, f"ok ({len(replies)} worker{'s' if len(replies) != 1 else ''})"


_worker_lock = threading.Lock()
# (the Celery app asked, the answer, monotonic time until which it is reused)
_worker_answer: tuple[object, tuple[bool, str], float] | None = None


def check_worker_cached() -> tuple[bool, str]:
    """check_worker, asked at most once per WORKER_PING_CACHE_SECONDS per process: callers
    that arrive while a ping is under way wait for its answer instead of sending their own."""
    global _worker_answer
    app = _app()
    with _worker_lock:
        now = time.monotonic()
        if _worker_answer is not None:
            asked, answer, until = _worker_answer
            if asked is app and now < until:
                return answer
        answer = check_worker()
        ttl = WORKER_PING_CACHE_SECONDS if answer[0] else WORKER_PING_FAILURE_CACHE_SECONDS
        _worker_answer = (app, answer, time.monotonic() + ttl)
        return answer


def forget_worker_answer() -> None:
    global _worker_answer
    with _worker_lock:
        _worker_answer = None


def check_models() -> tuple[bool, str]:
    from ragapp.warmup import readiness_check

    return readiness_check()


@dataclass(frozen=True)
class ReadinessCheck:
    name: str
    run: Callable[[], tuple[bool, str]]
    # Not run (and failing) when this earlier check failed: a worker cannot answer a ping
    # through a broker that cannot be reached.
    needs: str | None = None


# Ready = every check passes. A new condition (e.g. models still loading) is one more entry
# here; /readyz, `make run` and the README's Health section follow it.
READINESS_CHECKS: list[ReadinessCheck] = [
    ReadinessCheck("database", check_database),
    ReadinessCheck("pgvector", check_pgvector, needs="database"),
    ReadinessCheck("broker", check_broker),
    ReadinessCheck("worker", check_worker_cached, needs="broker"),
    # This process's models (ragapp.warmup): "warming: loading minilm (12s)" until loaded.
    ReadinessCheck("models", check_models),
]


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, CheckResult]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.checks.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, result in self.checks.items() if not result.ok]


def readiness_report() -> Readiness:
    checks: dict[str, CheckResult] = {}
    for check in READINESS_CHECKS:
        if check.needs is not None and not checks[check.needs].ok:
            checks[check.name] = CheckResult(False, f"{check.needs} unreachable")
            continue
        ok, detail = check.run()
        checks[check.name] = CheckResult(ok, detail)
    return Readiness(checks=checks)
