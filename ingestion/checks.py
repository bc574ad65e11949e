"""System checks: an embedder's configured dimension must match its vector index."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError


@register(Tags.database)
def check_vector_indexes(app_configs=None, databases=None, **kwargs):
    from ingestion.vector_indexes import embedder_dimension, existing_index_dimensions, index_name

    if not databases or "default" not in databases:
        return []
    from django.db import connection

    try:
        if "ingestion_chunkembedding" not in connection.introspection.table_names():
            return []  # not migrated yet: migrate creates the indexes
        existing = existing_index_dimensions("default")
    except DatabaseError:
        return []
    problems = []
    for embedder in settings.RAG_EMBEDDERS:
        name = index_name(embedder)
        dim = embedder_dimension(embedder)
        if name not in existing:
            problems.append(
                Warning(
                    f"Embedder {embedder!r} has no vector index yet.",
                    hint="Run manage.py migrate, which creates it.",
                    id="ingestion.W001",
                )
            )
        elif existing[name] != dim:
            problems.append(
                Error(
                    f"Embedder {embedder!r} is configured with DIMENSION={dim} but its index "
                    f"{name} is built for vector({existing[name]}).",
                    hint="Fix RAG_EMBEDDERS, or drop the index and its vectors and run "
                    "manage.py migrate followed by manage.py reembed.",
                    id="ingestion.E001",
                )
            )
    return problems


@register()
def check_embedder_config(app_configs=None, **kwargs):
    problems = []
    for name, config in settings.RAG_EMBEDDERS.items():
        if "BACKEND" not in config or "DIMENSION" not in config:
            problems.append(
                Error(f"RAG_EMBEDDERS[{name!r}] needs BACKEND and DIMENSION.", id="ingestion.E002")
            )
    for name in settings.RAG_DEFAULT_EMBEDDERS:
        if name not in settings.RAG_EMBEDDERS:
            problems.append(
                Error(
                    f"RAG_DEFAULT_EMBEDDERS names {name!r}, which RAG_EMBEDDERS does not define.",
                    id="ingestion.E003",
                )
            )
    return problems
