"""`make run`'s supervision and `make services`, with cheap stand-ins for gunicorn and the
worker: the supervisor runs in its own process, as under `make run`, and gets real signals."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A tiny `make run`: the spec says which start-up steps to run, which children to start and
# whether to wait (forever) for readiness; then Supervisor.run supervises as run() does.
ENTRY = """
import json, sys
from ragapp.devservers import Supervisor

spec = json.loads(sys.argv[1])

def start(sup):
    for argv in spec.get("steps", []):
        sup.run_step(argv)
    for name, argv in spec.get("children", []):
        sup.add(name, argv)
    if spec.get("wait_forever"):
        print("waiting for readiness", flush=True)
        sup.wait_until(lambda: False, timeout=600)
    print("supervising", flush=True)

options = {"backoff": 0.05, "poll_interval": 0.05, "stop_timeout": 10, **spec.get("options", {})}
sys.exit(Supervisor(**options).run(start, cleanup=lambda: print("cleaned up", flush=True)))
"""

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def _pid_file_step(path: Path) -> list[str]:
    code = f"import os, time; open({str(path)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    return [sys.executable, "-c", code]


class Run:
    def __init__(self, tmp_path: Path, spec: dict, *, ignore_sigint: bool = False) -> None:
        self.log = tmp_path / "supervisor.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", ENTRY, json.dumps(spec)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                # As bash starts a background job (`make run &`) in a script.
                preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
                if ignore_sigint
                else None,
            )

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, predicate, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited early:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; output so far:\n{self.output()}")
            time.sleep(0.05)

    def wait_for_text(self, text: str, timeout: float = 30) -> None:
        self.wait_for(lambda: text in self.output(), timeout)

    def child_pids(self) -> dict[str, list[int]]:
        pids: dict[str, list[int]] = {}
        for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", self.output()):
            pids.setdefault(name, []).append(int(pid))
        return pids

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"supervisor ignored {signum}:\n{self.output()}") from None


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Reparented zombies are reaped by init shortly after the supervisor exits.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" in status.read_text()


@pytest.fixture
def runs(tmp_path):
    started: list[Run] = []

    def make(spec: dict, **kwargs) -> Run:
        run = Run(tmp_path, spec, **kwargs)
        started.append(run)
        return run

    yield make
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
        for pids in run.child_pids().values():
            for pid in pids:
                if not _gone(pid):
                    os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_child_that_exits_is_restarted_with_a_log_line(runs):
    # It leaves a process behind, as a killed gunicorn master leaves its workers.
    flaky = [
        sys.executable,
        "-c",
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen({SLEEPER!r})\n"
        "print('left behind', p.pid, flush=True)\n"
        "time.sleep(0.3)",
    ]
    run = runs(
        {"children": [["flaky", flaky], ["steady", SLEEPER]], "options": {"restart_limit": 100}}
    )
    run.wait_for(lambda: len(run.child_pids().get("flaky", [])) >= 3)
    assert "flaky (pid" in run.output() and "exited with code 0; restarting it in" in run.output()
    assert len(run.child_pids()["steady"]) == 1  # the other child was left alone
    left_behind = [int(pid) for pid in re.findall(r"left behind (\d+)", run.output())]
    assert _gone(left_behind[0])
    assert run.stop() == 0
    assert all(_gone(pid) for pid in left_behind)


def test_a_child_that_keeps_dying_fast_makes_it_give_up(runs):
    dying = [sys.executable, "-c", "raise SystemExit(3)"]
    run = runs(
        {
            "children": [["dying", dying], ["steady", SLEEPER]],
            "options": {"restart_limit": 3, "restart_window": 60},
        }
    )
    assert run.proc.wait(timeout=30) == 1
    out = run.output()
    assert "dying exited 3 times within 60s (last exit code 3); giving up" in out
    assert "cleaned up" in out
    assert all(_gone(pid) for pids in run.child_pids().values() for pid in pids)


def test_sigterm_stops_every_child_and_exits_0(runs):
    run = runs({"children": [["web", SLEEPER], ["worker", SLEEPER]]})
    run.wait_for_text("supervising")
    pids = run.child_pids()
    assert set(pids) == {"web", "worker"}
    assert run.stop(signal.SIGTERM) == 0
    assert "SIGTERM: stopping" in run.output() and "cleaned up" in run.output()
    assert all(_gone(pid) for ids in pids.values() for pid in ids)


def test_sigterm_during_a_start_up_step_stops_it_and_exits_0(runs, tmp_path):
    pid_file = tmp_path / "step.pid"
    run = runs({"steps": [_pid_file_step(pid_file)], "children": [["web", SLEEPER]]})
    run.wait_for(lambda: pid_file.exists() and pid_file.read_text())
    step_pid = int(pid_file.read_text())
    assert run.stop(signal.SIGTERM) == 0
    assert _gone(step_pid)
    assert "cleaned up" in run.output()
    assert "web" not in run.child_pids()  # start-up ended at the step


def test_sigterm_while_waiting_for_readiness_exits_0(runs):
    run = runs({"children": [["web", SLEEPER]], "wait_forever": True})
    run.wait_for_text("waiting for readiness")
    pids = run.child_pids()["web"]
    assert run.stop(signal.SIGTERM) == 0
    assert all(_gone(pid) for pid in pids)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_it_when_started_with_sigint_ignored(runs, signum):
    run = runs({"children": [["web", SLEEPER]]}, ignore_sigint=True)
    run.wait_for_text("supervising")
    pids = run.child_pids()["web"]
    assert run.stop(signum) == 0
    assert all(_gone(pid) for pid in pids)


def _services_env(var: Path, **extra: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "RAG_TEST_DATABASE_NAME"}
    }
    return {**env, "RAG_VAR_DIR": str(var), **extra}


def _shell(env: dict, code: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


SHOW_BUFFERS = (
    "from django.db import connection\n"
    "with connection.cursor() as c:\n"
    "    c.execute('SHOW shared_buffers'); print(c.fetchone()[0])"
)


@pytest.mark.slow
def test_make_services_leaves_a_migrated_database_with_memory_sized_for_the_machine(tmp_path):
    var = tmp_path / "var"
    env = _services_env(var, RAG_PG_SHARED_BUFFERS="256MB")
    devservers = [sys.executable, "-m", "ragapp.devservers"]
    try:
        start = subprocess.run(
            [*devservers, "start"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert start.returncode == 0, start.stdout + start.stderr
        assert _shell(env, "from ragapp.models import User; print(User.objects.count())") == "0"
        assert _shell(env, SHOW_BUFFERS) == "256MB"
        # A size the machine cannot give: the server starts as it was, and says so.
        subprocess.run([*devservers, "stop"], cwd=ROOT, env=env, timeout=120, check=True)
        greedy = {**env, "RAG_PG_SHARED_BUFFERS": "4TB"}
        start = subprocess.run(
            [*devservers, "start"],
            cwd=ROOT,
            env=greedy,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert start.returncode == 0, start.stdout + start.stderr
        if Path("/proc/sys/vm/overcommit_memory").read_text().strip() != "1":
            assert "did not start with shared_buffers=4TB" in start.stdout
            assert _shell(env, SHOW_BUFFERS) == "256MB"
        # Not a size at all: refused before any restart.
        subprocess.run([*devservers, "stop"], cwd=ROOT, env=env, timeout=120, check=True)
        start = subprocess.run(
            [*devservers, "start"],
            cwd=ROOT,
            env={**env, "RAG_PG_SHARED_BUFFERS": "lots"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert start.returncode == 0 and "refused" in start.stdout, start.stdout + start.stderr
    finally:
        subprocess.run([*devservers, "stop"], cwd=ROOT, env=env, timeout=120)
        shutil.rmtree(var, ignore_errors=True)


def test_shared_buffers_are_a_quarter_of_memory_at_most_8gb_unless_configured():
    from ragapp.devservers import shared_buffers_for

    gb = 1024**3
    assert shared_buffers_for(16 * gb) == "4096MB"
    assert shared_buffers_for(64 * gb) == "8192MB"
    assert shared_buffers_for(256 * 1024**2) is None  # PostgreSQL's 128MB is as much
    assert shared_buffers_for(None) is None
    assert shared_buffers_for(16 * gb, "2GB") == "2GB"
    assert shared_buffers_for(16 * gb, "default") is None
