"""Cold start: how long the first question after `make run` prints "Ready" takes.

    .venv/bin/python bench/cold_start.py [--compare-lazy] [--json out.json]

In a fresh temporary RAG_VAR_DIR (its own embedded PostgreSQL and Redis) the script runs
`python -m ragapp.devservers run` (what `make run` runs after installing), waits for its
"Ready" line, creates an API token for the first-start user `admin`, a knowledge base and a
few small documents from tests/fixtures, waits until they are ingested, and stops the server
with SIGTERM. Then, for each mode, it starts the server again and, the moment it prints
"Ready", asks the first question through POST /api/v1/chat (extractive: no LLM), then more
questions (the first one again last). It prints the time from process start to "Ready",
the first question's wall time, the median of the warm ones and their ratio (target: <= 2).

Modes: `warm` (RAG_WARM_UP on, the default) and with --compare-lazy also `lazy`
(RAG_WARM_UP=0: the models load inside the first request, as before). Every wait is
bounded; the servers it starts are always stopped (SIGTERM, then `devservers stop`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
DOCUMENTS = [
    "postgresql-queries-with.en.md",
    "postgresql-indexes-intro.en.docx",
    "libreoffice-writer-tables.zh-cn.docx",
]
QUESTIONS = [
    "How does a recursive WITH query work?",
    "What kinds of indexes does PostgreSQL have?",
    "How do I insert a table in Writer?",
    "在 Writer 里怎样插入表格？",  # Chinese: its abstention judge (e5) must be warm too
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m ragapp.devservers run` with its output read in a thread."""

    def __init__(self, *, env: dict, port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.ready = threading.Event()
        self.ready_at: float | None = None
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ragapp.devservers", "run", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self.started_at

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log, "a", encoding="utf-8") as out:
            for line in self.proc.stdout:
                out.write(line)
                out.flush()
                self.lines.append(line.rstrip())
                if line.startswith("Ready in") and not self.ready.is_set():
                    self.ready_at = time.monotonic()
                    self.ready.set()

    def wait_ready(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.5):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}); see {self.log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no 'Ready' within {timeout:.0f}s; see {self.log}")
        return self.ready_at - self.started_at

    def stop(self, timeout: float = 90) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def api(base: str, token: str):
    import httpx

    return httpx.Client(
        base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=300
    )


def prepare(env: dict, port: int, log: Path, timeout: float) -> tuple[str, int]:
    """First start: token, knowledge base, documents ingested; then stop."""
    server = Server(env=env, port=port, log=log)
    server.start()
    try:
        seconds = server.wait_ready(timeout)
        print(f"first start (fresh database): Ready after {seconds:.1f}s", flush=True)
        token = subprocess.run(
            [sys.executable, "manage.py", "api_token", "admin", "--name", "cold start bench"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.strip()
        with api(f"http://127.0.0.1:{port}", token) as client:
            kb = client.post("/knowledge-bases", json={"name": "cold start"})
            kb.raise_for_status()
            kb_id = kb.json()["id"]
            files = [("files", (name, (FIXTURES / name).read_bytes())) for name in DOCUMENTS]
            client.post(f"/knowledge-bases/{kb_id}/documents", files=files).raise_for_status()
            deadline = time.monotonic() + timeout
            while True:
                docs = client.get(f"/knowledge-bases/{kb_id}/documents").json()
                docs = docs["items"] if isinstance(docs, dict) else docs  # paginated
                states = {d["name"]: d["status"] for d in docs}
                if docs and all(s in ("ready", "failed") for s in states.values()):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"documents not ingested within {timeout:.0f}s: {states}")
                time.sleep(2)
            print(f"ingested: {states}", flush=True)
        return token, kb_id
    finally:
        server.stop()


def ask(client, kb_id: int, question: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    response = client.post("/chat", json={"knowledge_bases": [kb_id], "question": question})
    seconds = time.perf_counter() - t0
    response.raise_for_status()
    return seconds, response.json()


def measure(mode: str, env: dict, port: int, log: Path, token: str, kb_id: int, timeout: float):
    server = Server(env=env, port=port, log=log)
    server.start()
    try:
        to_ready = server.wait_ready(timeout)
        with api(f"http://127.0.0.1:{port}", token) as client:
            questions = [*QUESTIONS, QUESTIONS[0]]  # the first again: same work, now warm
            asked = [ask(client, kb_id, q) for q in questions]
        first, first_body = asked[0]
        warm = [seconds for seconds, _ in asked[1:]]
        row = {
            "mode": mode,
            "start_to_ready_s": round(to_ready, 1),
            "first_s": round(first, 2),
            "warm_s": [round(s, 2) for s in warm],
            "warm_median_s": round(statistics.median(warm), 2),
            "ratio": round(first / statistics.median(warm), 2),
            "first_mode": first_body.get("mode"),
            "first_timings_ms": first_body.get("timings_ms"),
        }
        print(f"{mode}: {json.dumps(row)}", flush=True)
        return row
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare-lazy", action="store_true", help="also with RAG_WARM_UP=0")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per wait")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary var dir")
    args = parser.parse_args(argv)

    var = Path(tempfile.mkdtemp(prefix="ragapp-cold-"))
    log = var.with_suffix(".log")  # outside the var dir: kept when the run fails
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "OPENAI_BASE_URL"}
    }
    env.update(RAG_VAR_DIR=str(var), PYTHONUNBUFFERED="1")
    env.pop("RAG_WARM_UP", None)
    port = free_port()
    print(f"var dir {var}, port {port}, log {log}", flush=True)
    rows = []
    try:
        token, kb_id = prepare(env, port, log, args.timeout)
        modes = [("warm", {})] + ([("lazy", {"RAG_WARM_UP": "0"})] if args.compare_lazy else [])
        for mode, extra in modes:
            rows.append(measure(mode, {**env, **extra}, port, log, token, kb_id, args.timeout))
    finally:
        subprocess.run(
            [sys.executable, "-m", "ragapp.devservers", "stop"], cwd=ROOT, env=env, timeout=120
        )
        if not args.keep:
            shutil.rmtree(var, ignore_errors=True)

    print()
    print(f"{'mode':<6} {'start→Ready':>12} {'1st question':>13} {'warm median':>12} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['mode']:<6} {r['start_to_ready_s']:>11.1f}s {r['first_s']:>12.2f}s "
            f"{r['warm_median_s']:>11.2f}s {r['ratio']:>6.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0 if all(r["ratio"] <= 2 for r in rows if r["mode"] == "warm") else 1


if __name__ == "__main__":
    sys.exit(main())
