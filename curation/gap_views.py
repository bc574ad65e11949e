"""Pages of this part of curation (their URL patterns are at the bottom)."""

from __future__ import annotations

urlpatterns: list = []
