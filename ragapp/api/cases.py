"""/api/v1 endpoints: cases."""

from __future__ import annotations

from ninja import Router

router = Router(tags=["cases"])
