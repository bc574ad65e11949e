"""Load test: N concurrent users asking questions through the API of a running server.

    .venv/bin/python bench/load.py --users 1 5 10 20 --seconds 60 [--json out.json]

Needs the embedded services (`make services`). The script starts, on 127.0.0.1 only, a local
OpenAI-compatible LLM server that answers instantly and the web app under gunicorn pointed at
it, creates a user, a token and a small knowledge base, and then, for each user count, keeps
that many users asking questions (POST /api/v1/chat) for a fixed time. It prints requests/s,
p50/p95 latency and the error count per step; all traffic stays on this machine and every
step is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragapp.settings")

QUESTIONS = [
    "How do I back up a database?",
    "What does VACUUM reclaim?",
    "What makes range lookups fast?",
    "How do I restore a dump?",
    "如何在页脚插入页码？",
]
DOCS = {
    "backup.md": "# Backup\n\npg_dump writes a consistent backup of one database as an SQL "
    "script. To restore it, feed the script to psql.",
    "vacuum.md": "# Vacuum\n\nVACUUM reclaims storage occupied by dead tuples.",
    "indexes.md": "# Indexes\n\nA B-tree index keeps keys sorted, so range lookups are fast.",
    "页码.md": "# 页码\n\n在页脚中插入页码：选择“插入 - 页眉和页脚 - 页脚”，然后插入页码字段。",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare():
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from ingestion.models import KnowledgeBase
    from ingestion.services import document_create, documents_ingest_batch
    from ragapp.models import ApiToken

    user, _ = get_user_model().objects.get_or_create(username="rag-load-test")
    kb = KnowledgeBase.objects.filter(owner=user, name="load test").first()
    if kb is None:
        kb = KnowledgeBase.objects.create(owner=user, name="load test")
        ids = [
            document_create(
                knowledge_base=kb, fileobj=io.BytesIO(text.encode()), name=name, enqueue=False
            ).document.pk
            for name, text in DOCS.items()
        ]
        documents_ingest_batch(document_ids=ids)
    return kb.pk, ApiToken.issue(user, "load test")[1]


async def user_loop(client, url, token, kb_id, deadline, latencies, errors, offset):
    import httpx

    i = offset
    while time.monotonic() < deadline:
        question = QUESTIONS[i % len(QUESTIONS)]
        i += 1
        t0 = time.perf_counter()
        try:
            response = await client.post(
                f"{url}/api/v1/chat",
                json={"knowledge_bases": [kb_id], "question": question},
                headers={"Authorization": f"Bearer {token}"},
            )
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code}")
                continue
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)
            continue
        latencies.append((time.perf_counter() - t0) * 1000)


async def step(url, token, kb_id, users: int, seconds: float) -> dict:
    import httpx
    import numpy as np

    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(
            *(
                user_loop(client, url, token, kb_id, deadline, latencies, errors, n)
                for n in range(users)
            )
        )
        elapsed = time.monotonic() - started
    return {
        "users": users,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
        "p95_ms": round(float(np.percentile(latencies, 95)), 1) if latencies else None,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[20])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()

    from chat.fake_llm import FakeLLM

    llm = FakeLLM().start()
    llm.reply = lambda messages: "Here is what the passages say [1]."
    kb_id, token = prepare()
    port = free_port()
    env = dict(
        os.environ,
        OPENAI_BASE_URL=llm.base_url,
        OPENAI_API_KEY="local",
        RAG_API_RATE_LIMIT_PER_MINUTE="0",
    )
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "ragapp.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            str(args.workers),
            "--threads",
            str(args.threads),
            "--timeout",
            "120",
            "--preload",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the web server did not start")
            time.sleep(0.5)
        asyncio.run(step(url, token, kb_id, 2, 5))  # warm up: models load in each worker
        rows = [asyncio.run(step(url, token, kb_id, n, args.seconds)) for n in args.users]
    finally:
        server.terminate()
        server.wait(timeout=30)
        llm.stop()
    header = ["users", "secs", "requests", "req/s", "p50 ms", "p95 ms", "errors"]
    print(" ".join(f"{h:>8}" for h in header))
    for r in rows:
        keys = ["users", "seconds", "requests", "requests_per_s", "p50_ms", "p95_ms", "errors"]
        print(" ".join(f"{r[k]!s:>8}" for k in keys))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
