"""/api/v1 endpoints: gaps."""

from __future__ import annotations

from ninja import Router

router = Router(tags=["gaps"])
