"""manage.py bench_abstention [--manual PDF QUESTIONS]... [--faq DIR]... [--off-topic FILE]...
                              [--fit OUT.json] [--json OUT] [--reuse]

Does the chat abstain when the documents do not answer, and still answer when they do?
Extractive mode (no LLM), through the real chat pipeline. Per set and language it prints the
share of unanswerable questions abstained, of answerable questions answered, and page@1 (or
document@1 for FAQ sets: the first source is the gold page / document).

Question kinds:
- answerable: the set's own questions (bench/citations/*.jsonl for manuals: "page";
  BEIR FAQ sets: the gold document);
- near miss: written questions in the documents' domain and vocabulary whose answer they do
  not contain (bench/abstention/near-miss.*.jsonl, each line names its set);
- off-topic: questions no manual answers (bench/abstention/off-topic.*.jsonl), asked
  against every knowledge base of their language;
- removed (a stress test, reported apart and not fitted on): each answerable question again
  with its answer taken out: the gold page's (or document's) chunks are deleted inside a
  transaction that is rolled back after the question. Another passage often still answers
  it, so its "abstained" share has no target.

Questions are split into dev and test halves by a hash of their text; --fit refits the
abstention model (chat.abstention) on the dev half and reports both halves.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Q
from django.test import override_settings
from tqdm import tqdm

from chat.abstention import (
    FEATURES,
    HEAD,
    AbstentionModel,
    features,
    fit_logistic,
    judge_for,
    judge_score,
    model,
)
from chat.management.commands.ask import run_question
from ingestion.models import Chunk, DocumentStatus, KnowledgeBase
from ingestion.services import (
    document_create,
    documents_embed_for_rerank,
    documents_ingest_batch,
)
from retrieval.evaluation import load_beir
from retrieval.fusion import detect_query_language
from retrieval.services import search
from retrieval.types import Candidate
from textkit import percentile

KEEP_ANSWERED = 0.92
ALL_SETS = "(all sets)"


class _Rollback(Exception):
    pass


def split_of(text: str) -> str:
    return "dev" if int(hashlib.sha256(text.encode()).hexdigest(), 16) % 2 == 0 else "test"


class Command(BaseCommand):
    help = "Abstention benchmark: unanswerable abstained, answerable answered, page@1."

    def add_arguments(self, parser):
        parser.add_argument(
            "--manual", nargs=2, action="append", default=[], metavar=("PDF", "QUESTIONS")
        )
        parser.add_argument("--faq", action="append", default=[], metavar="DIR")
        parser.add_argument("--off-topic", action="append", default=[], metavar="FILE")
        parser.add_argument(
            "--near-miss",
            action="append",
            default=[],
            metavar="FILE",
            help="written in-domain questions the documents do not answer (a 'set' per line)",
        )
        parser.add_argument(
            "--no-removed", action="store_true", help="skip the answer-removed questions"
        )
        parser.add_argument("--limit", type=int, default=None, help="questions per set")
        parser.add_argument("--fit", metavar="OUT", help="refit the model on the dev half")
        parser.add_argument(
            "--from-json", action="append", metavar="FILE", help="re-score saved records"
        )
        parser.add_argument("--json", dest="json_out")
        parser.add_argument(
            "--reuse",
            action="store_true",
            help="reuse knowledge bases of an earlier run (same names)",
        )

    def handle(self, *args, **options):
        if options["from_json"]:
            records = [
                r
                for path in options["from_json"]
                for r in json.loads(Path(path).read_text())["records"]
            ]
            for r in records:  # the features as the current code computes them
                if r.get("head"):
                    # Word lookups in the knowledge base and the judge's cosine need the
                    # live system: kept as recorded.
                    kept = {
                        k: r["features"][k]
                        for k in ("absent", "specific", "judge")
                        if k in r["features"]
                    }
                    recomputed = features(r["question"], _head_candidates(r["head"]), absent=kept)
                    r["features"] = {**recomputed, **kept}
        else:
            records = self._collect(options)
        current = model()
        if options["fit"]:
            current = self._fit(records, options["fit"])
        report = self._report(records, current)
        self._print(report)
        timed = [r["judge_ms"] for r in records if r.get("judge_ms") is not None]
        if timed:
            self.stdout.write(
                f"judge: {len(timed)} questions, {percentile(timed, 50):.0f} ms p50, "
                f"{percentile(timed, 95):.0f} ms p95"
            )
        if options["json_out"]:
            Path(options["json_out"]).write_text(
                json.dumps({"report": report, "records": records}, indent=1, ensure_ascii=False)
            )

    # --- collecting -------------------------------------------------------------------

    def _collect(self, options) -> list[dict]:
        off_topic, near_miss = [], []
        for path in options["off_topic"]:
            off_topic += [json.loads(x) for x in Path(path).read_text("utf-8").splitlines() if x]
        for path in options["near_miss"]:
            near_miss += [json.loads(x) for x in Path(path).read_text("utf-8").splitlines() if x]
        sources = []
        for pdf, questions in options["manual"]:
            rows = [json.loads(x) for x in Path(questions).read_text("utf-8").splitlines() if x]
            sources.append(("manual", Path(questions).stem, [Path(pdf)], rows))
        for directory in options["faq"]:
            data = load_beir(directory)
            rows = [
                {"id": qid, "question": text, "doc": sorted(data.qrels.get(qid, {}))}
                for qid, text in data.queries.items()
                if data.qrels.get(qid)
            ]
            sources.append(("faq", data.name, data, rows))
        if not sources:
            raise CommandError("give at least one --manual or --faq set")
        owner, _ = get_user_model().objects.get_or_create(
            username="rag-benchmark", defaults={"is_active": False}
        )
        records = []
        with override_settings(OPENAI_BASE_URL=""):
            for kind, name, payload, rows in sources:
                kb = bench_knowledge_base(owner, kind, name, payload, options["reuse"], self.stderr)
                language = detect_query_language(rows[0]["question"]) or "en"
                rows = rows[: options["limit"]]
                run_question(user=owner, knowledge_bases=[kb], question="warm up")
                for row in tqdm(rows, desc=name, file=self.stderr):
                    records.append(self._ask(owner, kb, name, kind, row, remove=False))
                    if not options["no_removed"]:
                        records.append(self._ask(owner, kb, name, kind, row, remove=True))
                for row in near_miss:
                    if row.get("set") == name:
                        records.append(self._ask(owner, kb, name, "near-miss", row, remove=False))
                for row in off_topic:
                    if (row.get("lang") or detect_query_language(row["question"])) == language:
                        records.append(self._ask(owner, kb, name, "off-topic", row, remove=False))
        return records

    def _ask(self, owner, kb, name, kind, row, *, remove: bool) -> dict:
        question = row["question"]
        if remove:
            final = {}
            try:
                with transaction.atomic():
                    gold = Chunk.objects.filter(knowledge_base=kb)
                    if "page" in row:
                        p = row["page"]
                        gold = gold.filter(Q(page=p) | Q(page__lte=p, page_end__gte=p))
                    else:
                        gold = gold.filter(
                            document__original_name__in=[_doc_name(d) for d in row["doc"]]
                        )
                    gold.delete()
                    final = run_question(user=owner, knowledge_bases=[kb], question=question)
                    head = self._head(kb, question, final)
                    raise _Rollback
            except _Rollback:
                pass
            kind_out = "removed"
        else:
            final = run_question(user=owner, knowledge_bases=[kb], question=question)
            head = self._head(kb, question, final)
            kind_out = kind if kind in ("off-topic", "near-miss") else "answerable"
        sources = final.get("sources") or []
        top = sources[0] if sources else {}
        hit = None
        if kind_out == "answerable":
            if "page" in row:
                hit = top.get("page") == row["page"]
            else:
                hit = top.get("document") in {_doc_name(d) for d in row["doc"]}
        abstention = final.get("abstention") or {}
        language = detect_query_language(question) or "en"
        judge_ms = None
        judge = judge_for(language)
        if judge and head:  # what the judge adds to a question, timed again
            t0 = time.perf_counter()
            judge_score(judge, question, _head_candidates(head))
            judge_ms = round((time.perf_counter() - t0) * 1000, 1)
        return {
            "set": name,
            "source": kind,  # manual (gold page) or faq (gold document)
            "kind": kind_out,
            "question": question,
            "language": language,
            "split": split_of(question),
            "mode": final.get("mode"),
            "features": abstention.get("features", dict.fromkeys(FEATURES, 0.0)),
            "head": head,
            "hit": hit,
            "judge_ms": judge_ms,
        }

    @staticmethod
    def _head(kb, question: str, final: dict) -> list[dict]:
        """The head as the chat saw it (same search, same order), so that features can be
        recomputed offline (--from-json) when the abstention features change."""
        standalone = final.get("standalone_question") or question
        result = search(knowledge_bases=[kb], query=standalone)
        return [_head_dict(c) for c in result.results[:HEAD]]

    # --- fitting and reporting ----------------------------------------------------------

    def _fit(self, records, out: str) -> AbstentionModel:
        models = {}
        for language in sorted({r["language"] for r in records}):
            dev = [r for r in records if r["language"] == language and r["split"] == "dev"]
            # Answer-removed questions are a stress test, not labels: another passage often
            # still answers them (FAQ sets repeat themselves), so they are not fitted on.
            rows = [
                (r["features"], r["kind"] == "answerable") for r in dev if r["kind"] != "removed"
            ]
            if len({a for _, a in rows}) < 2:
                continue
            # The language's own model, and one with its judge where the run measured it.
            variants = {language: [f for f in FEATURES if f != "judge"]}
            judge = settings.RAG_ABSTAIN_JUDGE.get(language)
            if judge and all("judge" in f for f, _ in rows):
                variants[f"{language}+{judge}"] = list(FEATURES)
            for key, names in variants.items():
                entry = fit_logistic(rows, l2=1e-3, names=names)
                probe = AbstentionModel({key: {**entry, "threshold": 0.5}})
                answerable = sorted(
                    probe.probability(r["features"], key) for r in dev if r["kind"] == "answerable"
                )
                # The threshold keeps 92% of the dev answerable questions answered (a margin
                # over the 90% target); what it abstains on is measured, not chosen. Rounded
                # down: rounding up would drop the question the threshold sits on.
                kept = answerable[int((1 - KEEP_ANSWERED) * len(answerable))]
                entry["threshold"] = math.floor(kept * 10_000) / 10_000
                models[key] = entry
        fitted = AbstentionModel(
            models, {"fitted_on": sorted({r["set"] for r in records}), "split": "dev"}
        )
        fitted.save(out)
        self.stdout.write(f"wrote {out}")
        return fitted

    def _report(self, records, current: AbstentionModel) -> list[dict]:
        groups: dict[tuple, list[dict]] = {}
        for r in records:
            for split in (r["split"], "all"):
                groups.setdefault((r["set"], r["language"], split), []).append(r)
                # Each language over all its sets: the figures the targets are stated in.
                groups.setdefault((ALL_SETS, r["language"], split), []).append(r)
        rows = []

        def answered(r) -> bool:
            key = r["language"]
            judge = settings.RAG_ABSTAIN_JUDGE.get(key)
            if judge and "judge" in r["features"] and f"{key}+{judge}" in current.models:
                key = f"{key}+{judge}"
            return current.probability(r["features"], key) >= current.entry(key)["threshold"]

        for (name, language, split), items in sorted(groups.items()):
            ans = [r for r in items if r["kind"] == "answerable"]
            pages = [r for r in ans if name != ALL_SETS or _source(r) == "manual"]
            near = [r for r in items if r["kind"] == "near-miss"]
            removed = [r for r in items if r["kind"] == "removed"]
            off = [r for r in items if r["kind"] == "off-topic"]
            rows.append(
                {
                    "set": name,
                    "language": language,
                    "split": split,
                    "answerable": len(ans),
                    "answered": _share(sum(answered(r) for r in ans), len(ans)),
                    # Over all sets, page@1 counts the manuals (FAQ sets have no pages).
                    "page@1": _share(sum(bool(r["hit"]) for r in pages), len(pages)),
                    "near_miss": len(near),
                    "near_miss_abstained": _share(sum(not answered(r) for r in near), len(near)),
                    "removed": len(removed),
                    "removed_abstained": _share(
                        sum(not answered(r) for r in removed), len(removed)
                    ),
                    "off_topic": len(off),
                    "off_topic_abstained": _share(sum(not answered(r) for r in off), len(off)),
                    "unanswerable_abstained": _share(
                        sum(not answered(r) for r in near + off), len(near + off)
                    ),
                }
            )
        return rows

    def _print(self, report: list[dict]) -> None:
        head = (
            f"{'set':<22} {'lang':<4} {'split':<5} {'answerable':>10} {'answered':>9} "
            f"{'page@1':>7} {'near-miss abst.':>16} {'off-topic abst.':>16} {'unans. abst.':>13}"
            f" {'removed abst.':>16}"
        )
        self.stdout.write(head)
        for r in report:
            self.stdout.write(
                f"{r['set']:<22} {r['language']:<4} {r['split']:<5} {r['answerable']:>10} "
                f"{_fmt(r['answered']):>9} {_fmt(r['page@1']):>7} "
                f"{_fmt(r['near_miss_abstained']):>9} ({r['near_miss']:>3}) "
                f"{_fmt(r['off_topic_abstained']):>9} ({r['off_topic']:>3}) "
                f"{_fmt(r['unanswerable_abstained']):>13} "
                f"{_fmt(r['removed_abstained']):>9} ({r['removed']:>3})"
            )


def bench_knowledge_base(owner, kind, name, payload, reuse: bool, stderr) -> KnowledgeBase:
    """A knowledge base of a manual's PDFs or a BEIR corpus, ingested in-process (reused
    from an earlier run with --reuse)."""
    kb_name = f"bench-abstention {name}"
    kb = KnowledgeBase.objects.filter(owner=owner, name=kb_name).first()
    if kb and reuse and not kb.documents.exclude(status=DocumentStatus.READY).exists():
        documents_embed_for_rerank(document_ids=kb.documents.values_list("pk", flat=True))
        return kb
    if kb:
        from ingestion.services import knowledge_base_delete

        knowledge_base_delete(knowledge_base=kb)
    kb = KnowledgeBase.objects.create(owner=owner, name=kb_name)
    ids = []
    if kind == "manual":
        for path in payload:
            with open(path, "rb") as handle, transaction.atomic():
                ids.append(
                    document_create(
                        knowledge_base=kb, fileobj=handle, name=path.name, enqueue=False
                    ).document.pk
                )
    else:
        for corpus_id, (title, text) in payload.corpus.items():
            body = f"{title}\n\n{text}" if title else text
            with transaction.atomic():
                result = document_create(
                    knowledge_base=kb,
                    fileobj=io.BytesIO(body.encode()),
                    name=_doc_name(corpus_id),
                    enqueue=False,
                )
            if result.created:
                ids.append(result.document.pk)
    with tqdm(total=2 * len(ids), desc=f"ingesting {name}", file=stderr) as bar:
        documents_ingest_batch(document_ids=ids, progress=lambda *_: bar.update(1))
    # What a worker adds once they are ready: the second stage's e5 vectors.
    documents_embed_for_rerank(document_ids=ids)
    return kb


def _head_dict(c: Candidate) -> dict:
    return {
        "context": c.context,
        "heading_path": c.heading_path,
        "signals": c.signals,
        "support": c.support,
        "kind": c.kind,
    }


def _head_candidates(head: list[dict]) -> list[Candidate]:
    return [
        Candidate(
            i,
            i,
            "",
            h["context"],
            h["context"],
            heading_path=h["heading_path"],
            signals=h["signals"],
            support=h["support"],
            kind=h["kind"],
        )
        for i, h in enumerate(head)
    ]


def _source(record: dict) -> str:
    # Runs saved before records carried their source: the FAQ sets are named so.
    return record.get("source") or ("faq" if "faq" in record["set"] else "manual")


def _doc_name(corpus_id: str) -> str:
    return re.sub(r"[^\w.-]+", "_", corpus_id)[:150] + ".txt"


def _share(n: int, total: int) -> float | None:
    return round(n / total, 3) if total else None


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
