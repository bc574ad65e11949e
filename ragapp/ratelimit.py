"""Counting hits in Django's cache, for rate limits (the API's per token, password reset
mails per address). Use a shared cache (CACHE_URL) when several web processes serve."""

from __future__ import annotations

from django.core.cache import cache


def count_hit(key: str, *, timeout: int) -> int:
    """Add one hit to `key` and return its count; the count lives `timeout` seconds from
    the first hit."""
    cache.add(key, 0, timeout=timeout)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=timeout)
        return 1
