"""Bearer-token auth and a per-token rate limit for the API."""

from __future__ import annotations

import time

from django.conf import settings
from ninja.security import HttpBearer

from ragapp.models import ApiToken
from ragapp.ratelimit import count_hit


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("rate limit exceeded")
        self.retry_after = retry_after


def check_rate(token: ApiToken) -> None:
    limit = settings.RAG_API_RATE_LIMIT_PER_MINUTE
    if not limit:
        return
    window = int(time.time() // 60)
    if count_hit(f"api-rate:{token.pk}:{window}", timeout=70) > limit:
        raise RateLimited(retry_after=60 - int(time.time() % 60))


class TokenAuth(HttpBearer):
    def authenticate(self, request, token: str):
        api_token = ApiToken.authenticate(token)
        if api_token is None:
            return None
        check_rate(api_token)
        request.user = api_token.user
        request.api_token = api_token
        return api_token.user


def bearer_user(request):
    """For plain Django views (the OpenAI-compatible endpoint): the token's user or None."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    api_token = ApiToken.authenticate(header[7:].strip())
    if api_token is None:
        return None
    check_rate(api_token)
    return api_token.user
