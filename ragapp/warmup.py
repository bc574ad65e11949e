"""Load the models when a web or worker process starts, not on its first request.

Every backend loads lazily (retrieval.backends): a fresh process paid for importing torch and
loading MiniLM and USE inside the first search (two minutes on a busy 2-core machine), with
nothing on the screen. `start_background_warm_up()` runs `warm_up()` in a daemon thread once
per process, from ragapp/wsgi.py (each gunicorn worker) and from the Celery worker signals
below. Requests that arrive meanwhile are served: the ones that need a model wait on the same
lazy loaders (their locks), readiness says "warming" (ragapp.health), and the pages that
search show a notice (`warm_state()`, also at /warmup.json) instead of hanging silently.

Off with RAG_WARM_UP=0; never started under pytest unless a test asks for it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from django.conf import settings

logger = logging.getLogger(__name__)

# One English and one Chinese sentence: the two code paths of every embedder (MiniLM's
# tokenizer, USE's Chinese vocabulary) and jieba's dictionary.
_SAMPLE_EN = "How do I back up a database before an upgrade?"
_SAMPLE_ZH = "升级之前如何备份数据库？"

IDLE, WARMING, READY, FAILED = "idle", "warming", "ready", "failed"

_lock = threading.Lock()
_finished = threading.Event()  # set when no warm-up is running in this process
_finished.set()
_run_lock = threading.Lock()  # one warm_up() at a time
_thread: threading.Thread | None = None
_state: dict = {}


def _reset() -> None:
    global _thread
    _state.clear()
    _state.update(
        status=IDLE, loading=None, done=[], steps_ms={}, started_at=None, finished_at=None, error=""
    )
    _thread = None
    _finished.set()


_reset()


def _after_fork_in_child() -> None:
    # A process forked while its parent was warming has the state but not the thread (and
    # maybe a lock that thread held): start again as idle (a gunicorn --preload master's
    # workers, Celery's pool children).
    global _lock, _run_lock, _finished
    if _state["status"] == WARMING:
        _lock, _run_lock, _finished = threading.Lock(), threading.Lock(), threading.Event()
        _reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


def warm_state() -> dict:
    """A copy of this process's warm-up state, with the seconds it took (or has taken)."""
    with _lock:
        state = {**_state, "done": list(_state["done"]), "steps_ms": dict(_state["steps_ms"])}
    if state["started_at"] is not None:
        end = state["finished_at"] or time.time()
        state["seconds"] = round(end - state["started_at"], 1)
    return state


def is_warming() -> bool:
    with _lock:
        return _state["status"] == WARMING


def wait_until_warm(timeout: float | None = None) -> bool:
    """Block until no warm-up runs in this process (ready, failed, or never started): True;
    False when `timeout` seconds pass first. A caller that cannot wait shows a "loading"
    message while is_warming() is true."""
    return _finished.wait(timeout)


def _update(**changes) -> None:
    with _lock:
        _state.update(changes)


def _steps() -> list[tuple[str, Callable[[], object]]]:
    """What a first question would load, each exercised once: resolving the URLconf (imports
    the views, the API and the pipeline), every default embedder and those of existing
    knowledge bases (English and Chinese), jieba, the rerankers, the claim scorer, the
    abstention model and one search."""
    from retrieval.backends import get_embedder, get_reranker

    def urls() -> None:
        from django.urls import get_resolver

        get_resolver().url_patterns  # noqa: B018 - the import is the point

    def embedder(name: str) -> Callable[[], object]:
        def run():
            backend = get_embedder(name)
            backend.embed_query(_SAMPLE_EN)
            backend.embed_documents([_SAMPLE_EN, _SAMPLE_ZH])
            return backend.count_tokens(_SAMPLE_EN)

        return run

    def jieba() -> None:
        from retrieval.text import segment

        segment(_SAMPLE_ZH)

    def reranker(name: str) -> Callable[[], object]:
        def run():
            from retrieval.rerank.backends import RemoteReranker

            backend = get_reranker(name)
            if isinstance(backend, RemoteReranker):  # a server elsewhere: nothing to load
                return None
            return backend.score(_SAMPLE_EN, [_SAMPLE_EN + " Use pg_dump. 用 pg_dump 备份。"])

        return run

    def abstention() -> None:
        from chat.abstention import model

        model()

    def sample_search() -> None:
        # One read-only search per language over the newest knowledge base: after a restart
        # the database's caches are cold too, and the ORM, fusion and support code run once.
        # Best effort: a knowledge base that cannot be searched must not fail readiness.
        from django.db import connection

        from ingestion.models import KnowledgeBase
        from retrieval.services import search

        try:
            kb = KnowledgeBase.objects.order_by("-pk").first()
            if kb is not None:
                for query in (_SAMPLE_EN, _SAMPLE_ZH):
                    search(knowledge_bases=[kb], query=query)
        except Exception as exc:  # noqa: BLE001
            logger.warning("warm-up: the sample search failed (%s)", exc)
        finally:
            if not connection.in_atomic_block:
                connection.close()

    embedders, rerankers = _configured_names()
    steps: list[tuple[str, Callable[[], object]]] = [("app", urls), ("jieba", jieba)]
    steps += [(name, embedder(name)) for name in embedders]
    steps += [(f"reranker:{name}", reranker(name)) for name in rerankers]
    steps += [("abstention", abstention), ("search", sample_search)]
    return steps


def _configured_names() -> tuple[list[str], list[str]]:
    """Embedders and rerankers in use: the defaults, plus those of existing knowledge bases
    when the database answers (it may not be migrated yet: then the defaults only)."""
    # Question embedders compare FAQ and gap questions in every knowledge base.
    from retrieval.backends import embedder_available

    embedders = list(settings.RAG_DEFAULT_EMBEDDERS) + [
        n for n in settings.RAG_QUESTION_EMBEDDERS if embedder_available(n)
    ]
    rerankers = [settings.RAG_DEFAULT_RERANKER, settings.RAG_CLAIM_SCORER]
    try:
        from django.db import connection

        from ingestion.models import KnowledgeBase

        try:
            for names, reranker in KnowledgeBase.objects.values_list("embedders", "reranker"):
                embedders.extend(names or [])
                rerankers.append(reranker or settings.RAG_DEFAULT_RERANKER)
        finally:
            if not connection.in_atomic_block:  # (a test's transaction stays open)
                connection.close()  # this thread's own connection: not used again
    except Exception as exc:  # noqa: BLE001 - warming the defaults is still worth it
        logger.info("warm-up: knowledge bases not read (%s)", exc)
    known_embedders = settings.RAG_EMBEDDERS
    known_rerankers = settings.RAG_RERANKERS
    return (
        [n for n in dict.fromkeys(embedders) if n in known_embedders],
        [n for n in dict.fromkeys(rerankers) if n in known_rerankers],
    )


def warm_up() -> dict:
    """Load and exercise every model this process will need; return warm_state(). Instant
    when this process is already warm. A step that fails is recorded and the others still
    run; the state is then "failed" with the error text."""
    with _run_lock:
        if _state["status"] == READY:
            return warm_state()
        _finished.clear()
        _update(
            status=WARMING,
            loading=None,
            done=[],
            steps_ms={},
            started_at=time.time(),
            finished_at=None,
            error="",
        )
        errors: list[str] = []
        try:
            steps = _steps()
            for name, run in steps:
                _update(loading=name)
                t0 = time.perf_counter()
                try:
                    run()
                except Exception as exc:  # noqa: BLE001 - recorded, shown by readiness
                    logger.exception("warm-up: %s failed", name)
                    errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
                    continue
                ms = round((time.perf_counter() - t0) * 1000)
                with _lock:
                    _state["done"].append(name)
                    _state["steps_ms"][name] = ms
        except Exception as exc:  # noqa: BLE001 - e.g. a broken setting
            logger.exception("warm-up failed")
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
        finally:
            _update(
                status=FAILED if errors else READY,
                loading=None,
                finished_at=time.time(),
                error="; ".join(errors),
            )
            _finished.set()
        state = warm_state()
        steps_text = ", ".join(f"{n} {ms / 1000:.1f}s" for n, ms in state["steps_ms"].items())
        if errors:
            logger.error("warm-up failed after %.1fs: %s", state["seconds"], state["error"])
        else:
            logger.info("warm-up: ready in %.1fs (%s)", state["seconds"], steps_text)
        return state


def start_background_warm_up(*, force: bool = False) -> bool:
    """Run warm_up() in a daemon thread, once per process; True when this call started it.
    Does nothing when settings.RAG_WARM_UP is off (tests), unless `force`."""
    global _thread
    if not (settings.RAG_WARM_UP or force):
        return False
    with _lock:
        if _thread is not None or _state["status"] in (WARMING, READY):
            return False
        # Marked warming before the thread runs: readiness must not say ready in between.
        _state.update(status=WARMING, loading=None, started_at=time.time(), finished_at=None)
        _finished.clear()
        _thread = threading.Thread(target=warm_up, name="ragapp-warm-up", daemon=True)
    logger.info("warm-up: loading the models in the background (pid %s)", os.getpid())
    _thread.start()
    return True


def readiness_check() -> tuple[bool, str]:
    """ragapp.health's "models" entry: ready only when this process is warm."""
    state = warm_state()
    status = state["status"]
    if status == WARMING:
        loading = f"loading {state['loading']}" if state["loading"] else "starting"
        return False, f"warming: {loading} ({state.get('seconds', 0):.0f}s)"
    if status == FAILED:
        return False, f"failed: {state['error']}"
    if status == READY:
        return True, f"ready (warmed in {state['seconds']:.1f}s)"
    return True, "not warmed up (RAG_WARM_UP off): models load on first use"


# --- Celery worker processes -----------------------------------------------------------


def _on_worker_process_init(**kwargs) -> None:
    """A prefork pool child (or the solo pool's process): warm before its first task (the
    tasks wait on the same loaders). In a thread: Celery kills a child that is not up within
    4 seconds."""
    start_background_warm_up()


def _on_worker_init(sender=None, **kwargs) -> None:
    """The worker's main process: warm only when it runs the tasks itself (solo, threads).
    A prefork parent must stay light: its children are forked from it, also later (after
    a child dies), and a torch thread pool does not survive a fork."""
    pool = getattr(sender, "pool_cls", None)  # "prefork", "solo", "threads" or a class
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "") or ""
    if "prefork" in name or name == "processes":
        return
    start_background_warm_up()


def connect_worker_signals() -> None:
    from celery.signals import worker_init, worker_process_init

    worker_process_init.connect(_on_worker_process_init, weak=False, dispatch_uid="rag-warm-proc")
    worker_init.connect(_on_worker_init, weak=False, dispatch_uid="rag-warm-main")
