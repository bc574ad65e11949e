"""FAQ direct answers on paraphrases: precision and recall per language and embedder.

Data (bench/faq/<lang>.json): FAQ entries about one product, each with paraphrases of its
question (a direct answer with that entry is right, with any other entry wrong, none is a
miss), near-miss questions about the same product that no entry answers, and off-topic
questions (any direct answer to those two is wrong). Every question goes through the same
decision as the chat (curation.faq.faq_match): an equal question matches; otherwise the
nearest entry question by cosine, unless the question names something the entry never
mentions (curation.faq.unmentioned_names).

    manage.py bench_faq [--embedders use,minilm,e5] [--languages en,zh] [--threshold 0.8]
                        [--entry-side passage|query] [--json out.json]

Per language and embedder, at the threshold (by default the configured one for that
embedder and language): paraphrase recall (answered directly with the right entry),
direct-answer precision (of all direct answers, to paraphrases and unrelated questions
alike, the right ones), the false-match rate on near-miss and on off-topic questions, a
sweep of thresholds, and the calibration: the lowest threshold (0.01 steps) whose precision
is at least --min-precision (RAG_FAQ_MATCH_THRESHOLDS), and the lowest whose false-match
rate on all unrelated questions is at most --max-false-rate, for comparison.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from curation.faq import (
    best_match,
    entry_vectors,
    match_threshold,
    normalise_question,
    unmentioned_names,
)
from retrieval.backends import get_embedder
from retrieval.embedders import embed_queries

DATA = Path(settings.BASE_DIR) / "bench" / "faq"
SWEEP = [0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.93, 0.94, 0.95]


def _vectors(embedder: str, texts: list[str], *, side: str = "query") -> list:
    """As `question_vector` embeds one asked question (side="query", in batches) or
    `entry_vectors` an entry's question (side="passage")."""
    if side == "passage":
        return entry_vectors(embedder, texts)
    return list(embed_queries(get_embedder(embedder), texts))


def _scored(entries, queries, embedder, *, entry_side: str = "passage"):
    """(expected entry index or None, best entry index, score) per query, as faq_match
    decides: an equal question scores 1.0; a name the entry never mentions vetoes (-1)."""
    stored = _vectors(embedder, [e["question"] for e in entries], side=entry_side)
    vectors = _vectors(embedder, [text for _, text in queries])
    keys = {normalise_question(e["question"]): i for i, e in enumerate(entries)}
    out = []
    for (expected, text), vector in zip(queries, vectors, strict=True):
        if normalise_question(text) in keys:
            out.append((expected, keys[normalise_question(text)], 1.0))
            continue
        i, score = best_match(vector, stored)
        entry = entries[i]
        if unmentioned_names(text, f"{entry['question']}\n{entry['answer']}"):
            score = -1.0
        out.append((expected, i, score))
    return out


def metrics(scored, threshold: float) -> dict:
    paraphrases = [s for s in scored if s[0] is not None]
    unrelated = [s for s in scored if s[0] is None]
    direct = [s for s in scored if s[2] >= threshold]
    right = [s for s in direct if s[0] is not None and s[1] == s[0]]
    false_unrelated = [s for s in unrelated if s[2] >= threshold]
    return {
        "threshold": threshold,
        "paraphrases": len(paraphrases),
        "unrelated": len(unrelated),
        "direct_answers": len(direct),
        "recall": round(len(right) / len(paraphrases), 4) if paraphrases else 0.0,
        "precision": round(len(right) / len(direct), 4) if direct else 1.0,
        "wrong_entry": sum(1 for s in direct if s[0] is not None and s[1] != s[0]),
        "false_match_rate": round(len(false_unrelated) / len(unrelated), 4) if unrelated else 0.0,
    }


def calibrate(scored, *, min_precision: float, max_false_rate: float) -> dict:
    out: dict = {"for_precision": None, "for_false_rate": None}
    for step in range(30, 101):
        m = metrics(scored, step / 100)
        if out["for_precision"] is None and m["precision"] >= min_precision:
            out["for_precision"] = m
        if out["for_false_rate"] is None and m["false_match_rate"] <= max_false_rate:
            out["for_false_rate"] = m
    return out


class Command(BaseCommand):
    help = "Benchmark FAQ direct answers on paraphrased and unrelated questions (EN and ZH)."

    def add_arguments(self, parser):
        parser.add_argument("--embedders", default="use,minilm,e5", help="comma-separated")
        parser.add_argument("--languages", default="en,zh")
        parser.add_argument("--threshold", type=float, default=None)
        parser.add_argument("--min-precision", type=float, default=0.95)
        parser.add_argument("--max-false-rate", type=float, default=0.05)
        parser.add_argument("--json", default="", help="write the figures to this file")
        parser.add_argument(
            "--entry-side",
            choices=["query", "passage"],
            default="passage",
            help="embed the entries' questions as passages (as faq_match does) or queries",
        )

    def handle(self, *args, **opts):
        names = [n for n in opts["embedders"].split(",") if n]
        unknown = [n for n in names if n not in settings.RAG_EMBEDDERS]
        if unknown:
            raise CommandError(f"Not in RAG_EMBEDDERS: {', '.join(unknown)}")
        report: dict = {
            "min_precision": opts["min_precision"],
            "entry_side": opts["entry_side"],
            "languages": {},
        }
        for language in [x for x in opts["languages"].split(",") if x]:
            data = json.loads((DATA / f"{language}.json").read_text(encoding="utf-8"))
            entries = data["entries"]
            queries = [(i, p) for i, e in enumerate(entries) for p in e["paraphrases"]]
            near = [(None, q) for q in data["near_miss"]]
            off = [(None, q) for q in data["off_topic"]]
            k = len(queries)
            per_embedder = {}
            for name in names:
                threshold = opts["threshold"]
                if threshold is None:
                    threshold = match_threshold(name, language)
                scored = _scored(entries, queries + near + off, name, entry_side=opts["entry_side"])
                near_scored, off_scored = scored[k : k + len(near)], scored[k + len(near) :]
                per_embedder[name] = {
                    "at_threshold": {
                        **metrics(scored, threshold),
                        "near_miss_false_rate": metrics(near_scored, threshold)["false_match_rate"],
                        "off_topic_false_rate": metrics(off_scored, threshold)["false_match_rate"],
                    },
                    "sweep": [metrics(scored, t) for t in SWEEP],
                    "calibrated": calibrate(
                        scored,
                        min_precision=opts["min_precision"],
                        max_false_rate=opts["max_false_rate"],
                    ),
                }
            report["languages"][language] = {
                "entries": len(entries),
                "paraphrases": k,
                "near_miss": len(near),
                "off_topic": len(off),
                "faq_embedders": list(settings.RAG_FAQ_EMBEDDERS.get(language, [])),
                "embedders": per_embedder,
            }
        self._print(report, opts)
        if opts["json"]:
            Path(opts["json"]).write_text(json.dumps(report, indent=2), encoding="utf-8")

    def _print(self, report, opts):
        w = self.stdout.write
        for language, lang in report["languages"].items():
            w(
                f"\n{language}: {lang['entries']} entries, {lang['paraphrases']} paraphrases, "
                f"{lang['near_miss']} near misses, {lang['off_topic']} off-topic "
                f"(RAG_FAQ_EMBEDDERS: {', '.join(lang['faq_embedders']) or '-'})"
            )
            w(
                f"{'embedder':<9}{'thresh':>7}{'recall':>8}{'precision':>10}{'near-miss FM':>13}"
                f"{'off-topic FM':>13}   calibrated"
            )
            for name, e in lang["embedders"].items():
                m = e["at_threshold"]
                c = e["calibrated"]
                cp, cf = c["for_precision"], c["for_false_rate"]
                w(
                    f"{name:<9}{m['threshold']:>7.2f}{m['recall']:>8.3f}{m['precision']:>10.3f}"
                    f"{m['near_miss_false_rate']:>13.3f}{m['off_topic_false_rate']:>13.3f}   "
                    + (
                        f"precision>={opts['min_precision']}: {cp['threshold']:.2f} "
                        f"(recall {cp['recall']:.3f})"
                        if cp
                        else "precision: none"
                    )
                    + (
                        f"; false-match<={opts['max_false_rate']}: {cf['threshold']:.2f} "
                        f"(recall {cf['recall']:.3f}, precision {cf['precision']:.3f})"
                        if cf
                        else "; false-match: none"
                    )
                )
            w("  sweep: threshold, then recall / precision / false-match per embedder")
            for i, t in enumerate(SWEEP):
                cells = [
                    "{recall:.3f} / {precision:.3f} / {false_match_rate:.3f}".format(
                        **e["sweep"][i]
                    )
                    for e in lang["embedders"].values()
                ]
                w(f"  {t:.2f}   " + "    ".join(cells))
