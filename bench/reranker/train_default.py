"""Reproduce the shipped default second stage (retrieval/weights/default_ranker.json).

    .venv/bin/python bench/reranker/train_default.py all        # ~10 min on 2 cores

Steps (each can be run alone):
  prepare  apt-get download postgresql-doc-15 libreoffice-help-en-us libreoffice-help-zh-cn,
           dpkg-deb -x them, cut the HTML into sections and write four weak BEIR sets under
           $RERANK_DATA (default /tmp/rerank_data): weak-en, weak-zh (a document is one
           section) and weak-pages-en, weak-pages-zh (a document is a whole page).
  collect  ingest a BEIR set through the real pipeline into a throw-away knowledge base and
           store every query's recalled candidates (with stage signals) as a pickle.
           Also used on the dev sets, to measure without re-ingesting.
  train    fit the per-language linear ranker on the weak sets' candidates and write the
           model file, with a card (data, hyperparameters, metrics, time).
  score    nDCG@10 of recall order vs the trained ranker on collected pickles.

No benchmark's source is used: Python, Debian FAQ/reference, TeX and R documentation are
excluded by construction (only the three packages above are read).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import pickle
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("RERANK_DATA", "/tmp/rerank_data"))
PACKAGES = ["postgresql-doc-15", "libreoffice-help-en-us", "libreoffice-help-zh-cn"]
SEED = 13
# Weak queries that look like a user's question. First-sentence queries are copied from the
# text next to their answer: they teach the ranker to trust exact word overlap, which
# users' questions do not have (measured: en dev 0.786 with them, 0.797 without).
TRAIN_KINDS = ("heading", "template")
# Section-level sets (a document is one section) and page-level ones (a document is a whole
# page of sections), per language; a query's language picks its weights.
TRAIN_SETS = ("weak-en", "weak-zh", "weak-pages-en", "weak-pages-zh")


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragapp.settings")
    import django

    django.setup()


# ---------------------------------------------------------------- prepare


def download() -> Path:
    debs, out = DATA / "debs", DATA / "extracted"
    debs.mkdir(parents=True, exist_ok=True)
    if not list(debs.glob("*.deb")):
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True)
    if not out.exists():
        for deb in debs.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(out)], check=True)
    return out


def html_sections(path: Path):
    from bs4 import BeautifulSoup, NavigableString

    from retrieval.training.weak import Section

    soup = BeautifulSoup(path.read_bytes(), "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    root = soup.find(id="DisplayArea") or soup.body or soup
    for junk in root.select(
        "script, style, nav, header, aside, .navheader, .navfooter, .toc, .relatedtopics"
    ):
        junk.decompose()
    sections, heading, parts = [], "", []
    for node in root.descendants:
        if getattr(node, "name", None) in {"h1", "h2", "h3", "h4"}:
            sections.append((heading, parts))
            heading, parts = node.get_text(" ", strip=True), []
        elif isinstance(node, NavigableString) and not any(
            p.name in {"h1", "h2", "h3", "h4"} for p in node.parents if p is not None
        ):
            text = str(node).strip()
            if text:
                parts.append(text)
    sections.append((heading, parts))
    page = re.sub(r"^(PostgreSQL: Documentation: 15: )", "", title)
    page = re.sub(r"\s*[-–]\s*PostgreSQL.*$", "", page)
    for heading, parts in sections:
        body = re.sub(r"\s+", " ", " ".join(parts)).strip()
        heading = re.sub(r"^[\d.A-Z]+\.\s+", "", heading).strip()  # "5.3.2. Foo" -> "Foo"
        if heading:
            yield Section(page=page, heading=heading, body=body[:2000])


def sources() -> dict[str, list[list[Path]]]:
    share = download() / "usr/share"
    return {
        "en": [
            sorted((share / "doc/postgresql-doc-15/html").glob("*.html")),
            sorted((share / "libreoffice/help/en-US").rglob("*.html")),
        ],
        "zh": [sorted((share / "libreoffice/help/zh-CN").rglob("*.html"))],
    }


def write_beir(out: Path, corpus: list, queries: list, qrels: list) -> None:
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as h:
        h.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in corpus)
    with open(out / "queries.jsonl", "w", encoding="utf-8") as h:
        h.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in queries)
    (out / "qrels/test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n", "utf-8"
    )
    print(f"{out}: {len(corpus)} documents, {len(queries)} weak queries")


def build_sets() -> None:
    """weak-LANG: one section per document, the query finds its section."""
    from retrieval.training.weak import weak_query

    rng = random.Random(SEED)
    for language, groups in sources().items():
        sections = []
        for files in groups:
            found = []
            for f in files:
                found.extend(
                    s for s in html_sections(f) if len(s.body) >= (40 if language == "zh" else 150)
                )
            rng.shuffle(found)
            sections.extend(found[: 1400 // len(groups)])
        seen, corpus, queries, qrels = set(), [], [], []
        for i, section in enumerate(sections):
            key = (section.heading, section.body[:100])
            if key in seen:
                continue
            seen.add(key)
            doc_id = f"d{i}"
            weak = weak_query(section, rng) if len(queries) < 600 and rng.random() < 0.6 else None
            text = weak.positive if weak else section.body
            corpus.append({"_id": doc_id, "title": "", "text": text})
            if weak:
                queries.append({"_id": f"q{i}", "text": weak.query, "kind": weak.kind})
                qrels.append(f"q{i}\t{doc_id}\t1")
        write_beir(DATA / f"weak-{language}", corpus, queries, qrels)


# A page of the page-level sets is cut here (a manual page, an FAQ entry with its sections).
PAGE_CHARS = 6000


def build_page_sets() -> None:
    """weak-pages-LANG: one whole page per document, the query asks about one of its
    sections and finds the page. Documents of several sections are what FAQ entries and
    PDF pages look like; here a document's vector and the section's matter."""
    from retrieval.training.weak import weak_query

    rng = random.Random(SEED + 1)
    minimum = {"en": 150, "zh": 40}
    for language, groups in sources().items():
        pages = []
        for files in groups:
            files = list(files)
            rng.shuffle(files)
            found = []
            for f in files:
                sections = [s for s in html_sections(f) if len(s.body) >= minimum[language]]
                if sections:
                    found.append(sections)
                if len(found) >= 800 // len(groups):
                    break
            pages.extend(found)
        corpus, queries, qrels = [], [], []
        for i, sections in enumerate(pages):
            # Ask about a section that starts well inside the cut.
            starts = list(itertools.accumulate(len(s.heading) + len(s.body) + 3 for s in sections))
            inside = [j for j, end in enumerate([0, *starts[:-1]]) if end < PAGE_CHARS - 500]
            doc_id, asked = f"p{i}", rng.choice(inside)
            weak = weak_query(sections[asked], rng) if len(queries) < 600 else None
            parts = []
            for j, section in enumerate(sections):
                if j == asked and weak is not None:
                    # The query's own words leave the page, as in the section-level sets.
                    body = weak.positive
                    heading = "" if weak.kind != "sentence" else section.heading
                else:
                    body, heading = section.body, section.heading
                parts.append(f"{heading}\n{body}" if heading else body)
            text = "\n\n".join(parts)[:PAGE_CHARS]
            corpus.append({"_id": doc_id, "title": "", "text": text})
            if weak is not None:
                queries.append({"_id": f"q{i}", "text": weak.query, "kind": weak.kind})
                qrels.append(f"q{i}\t{doc_id}\t1")
        write_beir(DATA / f"weak-pages-{language}", corpus, queries, qrels)


# ---------------------------------------------------------------- collect


def collect(dataset_dir: Path, out: Path, recall_k: int = 50) -> None:
    """Candidates of every query, labelled by document relevance, pickled."""
    from django.conf import settings

    from ingestion.services import knowledge_base_delete
    from retrieval.evaluation import load_beir
    from retrieval.management.commands.evaluate import Command as Evaluate
    from retrieval.services import recall

    dataset = load_beir(dataset_dir)
    evaluate = Evaluate(stdout=sys.stdout, stderr=sys.stderr)
    kb = evaluate._ingest(dataset, list(settings.RAG_DEFAULT_EMBEDDERS))
    rows = []
    try:
        t0 = time.perf_counter()
        for query_id, text in dataset.queries.items():
            found = recall(knowledge_bases=[kb], query=text, k=recall_k)
            relevant = set(dataset.qrels[query_id])
            labels = [
                int(bool(set(evaluate.corpus_ids_of.get(c.document_id, [])) & relevant))
                for c in found
            ]
            rows.append({"query": text, "candidates": found, "labels": labels})
        print(f"recalled {len(rows)} queries in {time.perf_counter() - t0:.0f}s")
    finally:
        knowledge_base_delete(knowledge_base=kb)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as handle:
        pickle.dump(rows, handle)
    print(f"wrote {out}")


# ---------------------------------------------------------------- train / score


def load_rows(paths):
    rows = []
    for path in paths:
        with open(path, "rb") as handle:
            rows.extend(pickle.load(handle))
    return rows


def without_second_stage(row: dict) -> dict:
    from retrieval.rerank.linear import SECOND_STAGE_EMBEDDER

    drop = {f"dense:{SECOND_STAGE_EMBEDDER}", f"cosine:{SECOND_STAGE_EMBEDDER}"}
    candidates = [
        dataclasses.replace(c, signals={k: v for k, v in c.signals.items() if k not in drop})
        for c in row["candidates"]
    ]
    return {**row, "candidates": candidates}


def train(out: Path) -> None:
    from retrieval.training.ranker import fit_language_models

    t0 = time.perf_counter()
    rows = {}
    for name in TRAIN_SETS:
        with open(DATA / name / "queries.jsonl", encoding="utf-8") as handle:
            kinds = {row["text"]: row["kind"] for row in map(json.loads, handle)}
        found = load_rows([DATA / f"cands-{name}.pkl"])
        rows[name] = [r for r in found if kinds.get(r["query"]) in TRAIN_KINDS]
        # The same queries without the second-stage embedder's cosines train the plain
        # "LANGUAGE" weights (documents whose vectors are not added yet, or no e5 here).
        rows[f"{name} without e5"] = [without_second_stage(r) for r in rows[name]]
    model, report = fit_language_models(rows, seed=SEED)
    card = {
        "kind": "linear ranker over per-query standardised first-stage features",
        "data": {
            "packages": PACKAGES,
            "queries": {name: len(r) for name, r in rows.items()},
            "recipe": "weak queries from HTML sections; the section or its whole page is "
            "the document (bench/reranker/train_default.py)",
            "query_kinds": list(TRAIN_KINDS),
        },
        "hyperparameters": report["hyperparameters"],
        "metrics_held_out": report["metrics"],
        "train_seconds": round(time.perf_counter() - t0, 1),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    model = type(model)(features=model.features, weights=model.weights, card=card)
    model.save(out)
    print(json.dumps(card, indent=1))


def score(model_path: Path, pickles) -> None:
    from retrieval.rerank.linear import LinearRanker
    from retrieval.training.ranker import ranking_metrics

    model = LinearRanker.load(model_path)
    for path in pickles:
        rows = load_rows([path])
        before = ranking_metrics(rows, None)
        after = ranking_metrics(rows, model)
        print(f"{Path(path).name}: recall order {before}  ->  ranker {after}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["prepare", "collect", "train", "score", "all"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--out", type=Path, default=ROOT / "retrieval/weights/default_ranker.json")
    options = parser.parse_args()
    django_setup()
    if options.step in ("prepare", "all"):
        build_sets()
        build_page_sets()
    if options.step == "collect":
        collect(Path(options.args[0]), Path(options.args[1]))
    if options.step == "all":
        for name in TRAIN_SETS:
            collect(DATA / name, DATA / f"cands-{name}.pkl")
    if options.step in ("train", "all"):
        train(options.out)
    if options.step == "score":
        score(options.out, options.args)


if __name__ == "__main__":
    main()
