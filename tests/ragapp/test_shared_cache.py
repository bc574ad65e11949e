"""Django's cache is shared by every process when the embedded Redis is used, so rate limits
(API tokens, password reset mails) count once across gunicorn's processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from django.conf import settings
from django.core.cache import cache

from tests.conftest import ROOT


def test_the_cache_is_the_embedded_redis_by_default():
    if os.environ.get("CACHE_URL") or os.environ.get("CELERY_BROKER_URL"):
        return  # pointed at real servers: their choice
    default = settings.CACHES["default"]
    assert default["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert default["LOCATION"].startswith("unix://") and default["LOCATION"].endswith("?db=2")


@pytest.mark.slow
def test_two_processes_count_hits_on_one_key_together():
    key = f"test-shared-count:{uuid.uuid4().hex}"
    code = f"from ragapp.ratelimit import count_hit; print(count_hit({key!r}, timeout=60))"
    counts = []
    try:
        for _ in range(2):
            result = subprocess.run(
                [sys.executable, "manage.py", "shell", "-c", code],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, result.stderr
            counts.append(result.stdout.strip().splitlines()[-1])
    finally:
        cache.delete(key)
    assert counts == ["1", "2"]
