"""Model backends chosen in settings, the way Django chooses cache backends.

`get_embedder("minilm")` reads `settings.RAG_EMBEDDERS["minilm"]`, imports its BACKEND
with `import_string`, builds it with OPTIONS, and caches the instance per process. Models
inside a backend load lazily on first use, never here.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

_cache: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def _load(setting: str, name: str) -> Any:
    key = (setting, name)
    with _lock:
        if key not in _cache:
            configs = getattr(settings, setting)
            if name not in configs:
                raise ImproperlyConfigured(
                    f"{setting} has no entry {name!r} (configured: {', '.join(configs) or 'none'})."
                )
            config = configs[name]
            backend = import_string(config["BACKEND"])
            options = dict(config.get("OPTIONS", {}))
            if "DIMENSION" in config:
                options["dimension"] = int(config["DIMENSION"])
            _cache[key] = backend(name=name, **options)
        return _cache[key]


def get_embedder(name: str):
    return _load("RAG_EMBEDDERS", name)


def embedder_available(name: str) -> bool:
    """Whether the embedder can run on this machine (a backend may say it cannot, e.g. a
    CPU without the instructions its engine needs); configured ones are assumed to."""
    if name not in settings.RAG_EMBEDDERS:
        return False
    check = getattr(get_embedder(name), "available", None)
    return check() if check is not None else True


def get_reranker(name: str | None = None):
    return _load("RAG_RERANKERS", name or settings.RAG_DEFAULT_RERANKER)


@receiver(setting_changed)
def _clear_cache(*, setting: str, **kwargs) -> None:
    if setting in {"RAG_EMBEDDERS", "RAG_RERANKERS"}:
        with _lock:
            for key in [k for k in _cache if k[0] == setting]:
                del _cache[key]
