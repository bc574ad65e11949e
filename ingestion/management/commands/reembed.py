"""manage.py reembed [--kb NAME ...] [--embedder NAME ...]

Re-embeds the chunks of a knowledge base (or all) with its embedders, after the embedding
model changed; `--embedder` first switches the knowledge base to those embedders.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ingestion.management import knowledge_bases_named
from ingestion.services import knowledge_base_reembed


class Command(BaseCommand):
    help = "Re-embed knowledge bases after the embedding model changed."

    def add_arguments(self, parser):
        parser.add_argument("--kb", action="append", help="knowledge base name (default: all)")
        parser.add_argument("--embedder", action="append", help="switch to these embedders first")

    def handle(self, *args, **options):
        kbs = knowledge_bases_named(options["kb"])
        if options["embedder"]:
            unknown = [e for e in options["embedder"] if e not in settings.RAG_EMBEDDERS]
            if unknown:
                raise CommandError(f"unknown embedder(s): {', '.join(unknown)}")
        for kb in kbs:
            if options["embedder"]:
                kb.embedders = options["embedder"]
                kb.save(update_fields=["embedders", "updated_at"])
            total = kb.documents.count()
            with tqdm(total=total, desc=kb.name, file=self.stderr, unit="doc") as bar:
                count = knowledge_base_reembed(knowledge_base=kb, progress=lambda _d: bar.update(1))
            self.stdout.write(
                f"{kb.name}: {count} chunks re-embedded with {', '.join(kb.embedders)}"
            )
