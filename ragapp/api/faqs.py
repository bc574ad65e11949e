"""/api/v1 endpoints: faqs."""

from __future__ import annotations

from ninja import Router

router = Router(tags=["faqs"])
