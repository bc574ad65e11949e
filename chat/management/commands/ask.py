"""manage.py ask --kb NAME [--json] QUESTION...

Answers questions against a knowledge base through the chat service, for scripts and quick
checks. With --json: one JSON object per question, one a line.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from chat.services import answer_question
from ingestion.models import KnowledgeBase


def run_question(*, user, knowledge_bases, question: str) -> dict:
    final: dict = {}
    for event in answer_question(user=user, knowledge_bases=knowledge_bases, question=question):
        if event.type in ("done", "error"):
            final = {"type": event.type, **event.data}
    return final


class Command(BaseCommand):
    help = "Answer questions against a knowledge base (same pipeline as the chat)."

    def add_arguments(self, parser):
        parser.add_argument("questions", nargs="+", metavar="QUESTION")
        parser.add_argument("--kb", required=True, action="append", help="knowledge base name")
        parser.add_argument("--json", action="store_true", help="one JSON object per line")

    def handle(self, *args, **options):
        kbs = []
        for name in options["kb"]:
            matches = list(KnowledgeBase.objects.filter(name=name))
            if not matches:
                raise CommandError(f"no knowledge base named {name!r}")
            if len(matches) > 1:
                raise CommandError(f"several knowledge bases are named {name!r}; rename one")
            kbs.append(matches[0])
        user = kbs[0].owner
        for question in options["questions"]:
            final = run_question(user=user, knowledge_bases=kbs, question=question)
            if final.get("type") == "error":
                mode = "error"
            else:
                mode = final.get("mode", "error")
            sources = [
                {
                    "n": s["n"],
                    "document": s["document"],
                    "page": s["page"],
                    "heading": s["heading"],
                    "chunk_id": s["chunk_id"],
                    "score": s["score"],
                    "text": s["text"],
                }
                for s in final.get("sources", [])
            ]
            timings = final.get("timings_ms", {})
            record = {
                "question": question,
                "answer": final.get("answer", final.get("message", "")),
                "mode": mode,
                "sources": sources,
                "timings_ms": {
                    k: timings.get(k)
                    for k in ("condense", "recall", "rerank", "first_token", "total")
                },
            }
            if mode == "error":
                record["error"] = final.get("message", "")
            if options["json"]:
                self.stdout.write(json.dumps(record, ensure_ascii=False))
            else:
                self.stdout.write(f"Q: {question}\n{record['answer']}\n")
                for s in sources:
                    where = f", page {s['page']}" if s["page"] else ""
                    self.stdout.write(f"  [{s['n']}] {s['document']}{where} (score {s['score']})")
                self.stdout.write("")
