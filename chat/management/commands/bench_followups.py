"""manage.py bench_followups --manual PDF SET [--manual PDF SET]... [--llm none|env] [--json OUT]

Follow-up questions inside a conversation. Each line of a SET (bench/followups/*.jsonl; a
set named like a bench_abstention set reuses its knowledge base with --reuse) has a first
question, a follow-up that depends on it ("What licence is it distributed under?"),
the self-contained version of the follow-up and its gold page. Per set it prints page@1 of:
the follow-up asked in the conversation after the first question, the self-contained
version asked alone, and the follow-up asked alone (what retrieval made of it before
follow-ups were resolved without an LLM). Target: in-conversation >= 0.8 x self-contained.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.test import override_settings
from tqdm import tqdm

from chat.management.commands.ask import run_question
from chat.management.commands.bench_abstention import bench_knowledge_base
from chat.models import Conversation
from chat.services import answer_question


def _final(events) -> dict:
    final: dict = {}
    for event in events:
        if event.type in ("done", "error"):
            final = event.data
    return final


class Command(BaseCommand):
    help = "Follow-up benchmark: page@1 in a conversation vs the self-contained question."

    def add_arguments(self, parser):
        parser.add_argument(
            "--manual", nargs=2, action="append", required=True, metavar=("PDF", "SET")
        )
        parser.add_argument("--llm", choices=["none", "env"], default="none")
        parser.add_argument("--reuse", action="store_true")
        parser.add_argument("--json", dest="json_out")

    def handle(self, *args, **options):
        owner, _ = get_user_model().objects.get_or_create(
            username="rag-benchmark", defaults={"is_active": False}
        )
        overrides = {"OPENAI_BASE_URL": ""} if options["llm"] == "none" else {}
        report, records = [], []
        with override_settings(**overrides):
            for pdf, path in options["manual"]:
                rows = [json.loads(x) for x in Path(path).read_text("utf-8").splitlines() if x]
                kb = bench_knowledge_base(
                    owner, "manual", Path(path).stem, [Path(pdf)], options["reuse"], self.stderr
                )
                run_question(user=owner, knowledge_bases=[kb], question="warm up")
                hits = {"conversation": 0, "standalone": 0, "alone": 0}
                for row in tqdm(rows, desc=Path(path).stem, file=self.stderr):
                    first = _final(
                        answer_question(user=owner, knowledge_bases=[kb], question=row["first"])
                    )
                    conversation = Conversation.objects.get(pk=first["conversation_id"])
                    follow = _final(
                        answer_question(
                            user=owner,
                            knowledge_bases=[kb],
                            question=row["followup"],
                            conversation=conversation,
                        )
                    )
                    standalone = run_question(
                        user=owner, knowledge_bases=[kb], question=row["standalone"]
                    )
                    alone = run_question(user=owner, knowledge_bases=[kb], question=row["followup"])
                    record = {"id": row["id"], "page": row["page"]}
                    for key, final in (
                        ("conversation", follow),
                        ("standalone", standalone),
                        ("alone", alone),
                    ):
                        sources = final.get("sources") or []
                        page = sources[0]["page"] if sources else None
                        record[key] = page
                        hits[key] += page == row["page"]
                    record["rewritten"] = follow.get("standalone_question")
                    records.append(record)
                n = len(rows)
                entry = {"set": Path(path).stem, "questions": n}
                entry.update({k: round(v / n, 3) for k, v in hits.items()})
                entry["ratio"] = (
                    round(hits["conversation"] / hits["standalone"], 3)
                    if hits["standalone"]
                    else None
                )
                report.append(entry)
        self.stdout.write(
            f"{'set':<16} {'n':>3} {'follow-up in conversation':>26} {'self-contained':>15} "
            f"{'ratio':>6} {'follow-up alone':>16}"
        )
        for r in report:
            self.stdout.write(
                f"{r['set']:<16} {r['questions']:>3} {r['conversation']:>26.3f} "
                f"{r['standalone']:>15.3f} {r['ratio'] or 0:>6.3f} {r['alone']:>16.3f}"
            )
        if options["json_out"]:
            Path(options["json_out"]).write_text(
                json.dumps({"report": report, "records": records}, indent=1, ensure_ascii=False)
            )
