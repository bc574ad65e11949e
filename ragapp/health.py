"""Reachability of the parts the product needs, for /healthz and `make run`."""

from __future__ import annotations

from django.db import connection


def check_database() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return False, f"{type(exc).__name__}: {exc}".strip()[:300]


def check_pgvector() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
        return (True, f"ok ({row[0]})") if row else (False, "extension 'vector' is not installed")
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}".strip()[:300]


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
        return False, f"{type(exc).__name__}: {exc}".strip()[:300]


def check_worker(timeout: float = 1.5) -> tuple[bool, str]:
    try:
        replies = _app().control.ping(timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}".strip()[:300]
    if not replies:
        return False, "no Celery worker answered"
    return True, f"ok ({len(replies)} worker{'s' if len(replies) != 1 else ''})"


def health_report() -> tuple[bool, dict]:
    checks = {"database": check_database(), "pgvector": check_pgvector(), "broker": check_broker()}
    checks["worker"] = check_worker() if checks["broker"][0] else (False, "broker unreachable")
    healthy = all(ok for ok, _ in checks.values())
    return healthy, {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()}
