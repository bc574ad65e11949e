"""File the failing answers of every (or one) knowledge base into its knowledge gaps."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from curation.gaps import gaps_refresh
from ingestion.models import KnowledgeBase


class Command(BaseCommand):
    help = "Group the questions that were not answered well into knowledge gaps."

    def add_arguments(self, parser):
        parser.add_argument("--kb", type=int, action="append", help="knowledge base id(s)")

    def handle(self, *args, kb=None, **options):
        kbs = KnowledgeBase.objects.all()
        if kb:
            kbs = kbs.filter(pk__in=kb)
        for knowledge_base in kbs.order_by("pk"):
            # A refresh files at most RAG_GAP_REFRESH_BATCH answers: repeat until done.
            filed = new = 0
            while True:
                result = gaps_refresh(knowledge_base=knowledge_base)
                filed += result.filed
                new += result.new_gaps
                if not result.filed:
                    break
            self.stdout.write(
                f"{knowledge_base.pk} {knowledge_base.name}: {filed} filed, {new} new gaps"
            )
