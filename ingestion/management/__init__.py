"""Shared helpers of the ingestion management commands."""

from __future__ import annotations

from django.core.management.base import CommandError


def knowledge_bases_named(names: list[str] | None):
    """The knowledge bases called `names` (all when None); a CommandError names any
    missing one."""
    from ingestion.models import KnowledgeBase

    kbs = KnowledgeBase.objects.all()
    if names:
        kbs = kbs.filter(name__in=names)
        missing = set(names) - set(kbs.values_list("name", flat=True))
        if missing:
            raise CommandError(f"no knowledge base named {', '.join(sorted(missing))}")
    return kbs
