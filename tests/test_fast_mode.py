"""`make test-fast`: the quick loop runs the plain core with the deterministic "hash"
embedder and refuses real models, so a test that needs one must say so with a marker."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FAST_EMBEDDER, ingest_texts

ROOT = Path(__file__).resolve().parent.parent
FAST = os.environ.get("RAG_TEST_FAST") == "1"
only_fast = pytest.mark.skipif(not FAST, reason="runs under make test-fast (RAG_TEST_FAST=1)")


def _test_fast_recipe() -> str:
    return subprocess.run(
        ["make", "-n", "test-fast", "VENV=.venv", "STAMP=Makefile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_make_test_fast_deselects_every_slow_marker_and_sets_fast_mode(pytestconfig):
    recipe = _test_fast_recipe()
    assert "RAG_TEST_FAST=1" in recipe and "ragapp.devservers test" in recipe
    expression = re.search(r'-m "([^"]+)"', recipe).group(1)
    deselected = set(re.findall(r"not (\w+)", expression))
    assert deselected == {"models", "worker", "browser", "training", "slow"}
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert deselected <= registered  # --strict-markers: a typo would deselect nothing


def test_tests_that_train_are_marked_training():
    import inspect

    from tests.retrieval import test_training

    trains = re.compile(r"fit_language_models\(|fine_tune\(|\"train_reranker\"|/reranker/")
    for name, fn in vars(test_training).items():
        if name.startswith("test_") and trains.search(inspect.getsource(fn)):
            marks = {m.name for m in getattr(fn, "pytestmark", [])}
            assert "training" in marks, name


@only_fast
def test_fast_mode_refuses_to_load_a_real_model():
    from retrieval.backends import get_embedder

    with pytest.raises(RuntimeError, match="mark the test `models`"):
        get_embedder("minilm").embed_query("a question")
    with pytest.raises(RuntimeError, match="mark the test `models`"):
        get_embedder("e5").embed_query("一个问题")


@only_fast
@pytest.mark.django_db
def test_fast_mode_indexes_and_searches_with_the_hash_embedder(make_user, make_kb):
    from django.core.checks import run_checks

    from ingestion.vector_indexes import existing_index_dimensions, index_name
    from retrieval.services import search

    assert existing_index_dimensions()[index_name(FAST_EMBEDDER)] == 64
    problems = run_checks(databases=["default"])
    assert not [p for p in problems if p.id and p.id.startswith("ingestion.")], problems

    kb = make_kb(make_user(), "fast")
    assert kb.embedders == [FAST_EMBEDDER]
    ingest_texts(
        kb,
        {
            "backup.md": "# Backups\n\nUse pg_dump to back up a PostgreSQL database.",
            "vacuum.md": "# Vacuum\n\nVACUUM reclaims storage occupied by dead tuples.",
        },
    )
    result = search(knowledge_bases=[kb], query="How do I back up a database with pg_dump?")
    assert result.results and result.results[0].document_name == "backup.md"
