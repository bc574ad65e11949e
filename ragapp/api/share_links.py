"""/api/v1 endpoints: share_links."""

from __future__ import annotations

from ninja import Router

router = Router(tags=["share_links"])
