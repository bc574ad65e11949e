"""manage.py embed_for_rerank [--kb NAME ...] [--here]

Gives ready documents the second-stage vectors they lack (settings.RAG_RERANK_EMBEDDERS):
after an upgrade from a release without them, or after the setting changed. By default the
documents are queued for the workers at the lowest priority, as ingestion queues them;
`--here` embeds in this process with a progress bar.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db.models import Exists, OuterRef
from tqdm import tqdm

from ingestion.management import knowledge_bases_named
from ingestion.models import ChunkEmbedding, DocumentStatus
from ingestion.services import (
    document_embed_for_rerank,
    queue_rerank_embedding,
    rerank_embedders_for,
)


class Command(BaseCommand):
    help = "Add the second-stage (rerank) vectors that ready documents lack."

    def add_arguments(self, parser):
        parser.add_argument("--kb", action="append", help="knowledge base name (default: all)")
        parser.add_argument("--here", action="store_true", help="embed in this process")

    def handle(self, *args, **options):
        kbs = knowledge_bases_named(options["kb"])
        for kb in kbs:
            names = rerank_embedders_for(kb)
            if not names:
                self.stdout.write(f"{kb.name}: no second-stage embedder applies")
                continue
            lacking = (
                kb.documents.filter(status=DocumentStatus.READY)
                .filter(
                    Exists(
                        kb.chunks.filter(document=OuterRef("pk"), is_parent=False).exclude(
                            Exists(
                                ChunkEmbedding.objects.filter(
                                    chunk=OuterRef("pk"), embedder__in=names
                                )
                            )
                        )
                    )
                )
                .values_list("pk", flat=True)
            )
            ids = list(lacking)
            if not options["here"]:
                queue_rerank_embedding(kb, ids)
                self.stdout.write(f"{kb.name}: {len(ids)} documents queued for {', '.join(names)}")
                continue
            added = 0
            for pk in tqdm(ids, desc=kb.name, file=self.stderr, unit="doc"):
                added += document_embed_for_rerank(document_id=pk)
            self.stdout.write(f"{kb.name}: {added} vectors added ({', '.join(names)})")
