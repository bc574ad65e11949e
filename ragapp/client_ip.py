"""The address a request came from, for per-client login throttling (django-axes calls
`client_ip` through AXES_CLIENT_IP_CALLABLE)."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: the connection's peer, or, behind RAG_TRUSTED_PROXIES reverse
    proxies, the address the outermost of them saw.

    Each proxy appends the address it received the request from to X-Forwarded-For, so with
    N trusted proxies the client is the N-th entry from the right; everything further left
    was written by the client and could be anything. Trusting the header without a proxy
    that sets it would let every request pick its own address and dodge the limit."""
    remote = _address(request.META.get("REMOTE_ADDR", ""))
    hops = settings.RAG_TRUSTED_PROXIES
    if hops <= 0:
        return remote
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [a for a in forwarded if a]
    if len(forwarded) < hops:
        # Not through the expected proxy chain (e.g. a health check from inside).
        return remote
    return _address(forwarded[-hops]) or remote


def _address(text: str) -> str | None:
    """The address in canonical form, or None (e.g. "" over a unix socket): the attempts
    table stores it in an inet column."""
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None
