"""One partial HNSW index per configured embedder on the shared, untyped vector column."""

from __future__ import annotations

import re

from django.conf import settings
from django.db import connections

TABLE = "ingestion_chunkembedding"
_NAME_RE = re.compile(r"^[a-z0-9_]+$")


def index_name(embedder: str) -> str:
    safe = re.sub(r"[^a-z0-9_]", "_", embedder.lower())
    return f"chunkemb_hnsw_{safe}"[:63]


def embedder_dimension(embedder: str) -> int:
    return int(settings.RAG_EMBEDDERS[embedder]["DIMENSION"])


def existing_index_dimensions(using: str = "default") -> dict[str, int]:
    """index name -> the dimension in its `::vector(N)` expression."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s "
            "AND indexname LIKE 'chunkemb_hnsw_%%'",
            [TABLE],
        )
        rows = cursor.fetchall()
    dims = {}
    for name, definition in rows:
        match = re.search(r"vector\((\d+)\)", definition)
        if match:
            dims[name] = int(match.group(1))
    return dims


def ensure_vector_indexes(using: str = "default") -> list[str]:
    """Create the missing per-embedder HNSW indexes; return the names created.

    An index whose dimension disagrees with the configuration is left alone: the system
    check reports it, because dropping it silently would hide a configuration mistake.
    """
    created = []
    existing = existing_index_dimensions(using)
    with connections[using].cursor() as cursor:
        for embedder in settings.RAG_EMBEDDERS:
            name = index_name(embedder)
            if name in existing:
                continue
            dim = embedder_dimension(embedder)
            cursor.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON {TABLE} "
                f"USING hnsw ((embedding::vector({dim})) vector_cosine_ops) "
                "WHERE embedder = %s",
                [embedder],
            )
            created.append(name)
    return created
