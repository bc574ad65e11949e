import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from django.core.checks import Error
from django.db import connection
from django.test import override_settings

from ingestion.checks import check_vector_indexes
from ingestion.models import Chunk, ChunkEmbedding, Document, Membership, Role
from ingestion.selectors import knowledge_base_get, knowledge_bases_for
from retrieval.recall import dense_search, keyword_search
from tests.conftest import ROOT, make_chunk


def _refresh_search_vectors(kb):
    from django.contrib.postgres.search import SearchVector

    Chunk.objects.filter(knowledge_base=kb).update(
        search_vector=SearchVector("search_text", config="english")
    )


@pytest.fixture
def doc(make_user, make_kb):
    owner = make_user("owner")
    kb = make_kb(owner, "manuals")
    return Document.objects.create(knowledge_base=kb, original_name="a.txt", content_hash="x" * 64)


def test_nearest_neighbours_in_order_through_hnsw(doc):
    kb = doc.knowledge_base
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for i, vec in enumerate(vectors):
        chunk = make_chunk(kb, doc, i, f"chunk {i}")
        ChunkEmbedding.objects.create(
            chunk=chunk, knowledge_base=kb, embedder="minilm", embedding=vec
        )
    query = vectors[17] + 0.05 * rng.normal(size=384).astype(np.float32)
    query /= np.linalg.norm(query)

    hits = dense_search(knowledge_bases=[kb], embedder="minilm", vector=query, k=10, ef_search=200)
    with connection.cursor() as cursor:  # its HNSW settings stayed in its own statement
        cursor.execute("SELECT current_setting('hnsw.ef_search')")
        assert cursor.fetchone()[0] == "40"

    ordinals = dict(Chunk.objects.filter(knowledge_base=kb).values_list("id", "ordinal"))
    exact = list(np.argsort(-(vectors @ query))[:10])
    assert [ordinals[h.chunk_id] for h in hits] == exact
    assert hits[0].score == pytest.approx(float(vectors[17] @ query), abs=1e-4)

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ingestion_chunkembedding")
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_sort = off")
        cursor.execute(
            "EXPLAIN SELECT chunk_id FROM ingestion_chunkembedding WHERE embedder = 'minilm' "
            "ORDER BY (embedding::vector(384)) <=> %s::vector(384) LIMIT 10",
            ["[" + ",".join(str(float(x)) for x in query) + "]"],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
        cursor.execute("RESET enable_sort")
    assert "chunkemb_hnsw_minilm" in plan


def test_keyword_search_finds_chinese_word_and_english_stem(doc):
    kb = doc.knowledge_base
    zh = make_chunk(kb, doc, 0, "我们可以通过创建索引来显著加快数据库的查询速度。")
    en = make_chunk(kb, doc, 1, "Indexes are a common way to enhance database performance.")
    make_chunk(kb, doc, 2, "Backups should be tested regularly.")
    _refresh_search_vectors(kb)

    assert [h.chunk_id for h in keyword_search(knowledge_bases=[kb], query="索引", k=5)] == [zh.id]
    # "indexing" and "Indexes" share the stem "index".
    hits = keyword_search(knowledge_bases=[kb], query="indexing", k=5)
    assert [h.chunk_id for h in hits] == [en.id]
    assert keyword_search(knowledge_bases=[kb], query="数据库", k=5)


def test_scoping_and_roles(make_user, make_kb):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    kb = make_kb(alice, "alice-kb")
    Membership.objects.create(knowledge_base=kb, user=bob, role=Role.VIEWER)

    assert list(knowledge_bases_for(user=alice)) == [kb]
    assert list(knowledge_bases_for(user=bob)) == [kb]
    assert list(knowledge_bases_for(user=carol)) == []
    # A viewer reads but cannot upload (write); a stranger gets 404, not 403.
    assert knowledge_base_get(user=bob, pk=kb.pk) == kb
    from django.http import Http404

    with pytest.raises(Http404):
        knowledge_base_get(user=bob, pk=kb.pk, write=True)
    with pytest.raises(Http404):
        knowledge_base_get(user=carol, pk=kb.pk)
    assert list(knowledge_bases_for(user=alice, write=True)) == [kb]


def test_search_never_crosses_knowledge_bases(make_user, make_kb):
    alice, bob = make_user("alice"), make_user("bob")
    kb_a, kb_b = make_kb(alice, "a"), make_kb(bob, "b")
    for kb in (kb_a, kb_b):
        d = Document.objects.create(
            knowledge_base=kb, original_name="x", content_hash=f"{kb.pk:064d}"
        )
        chunk = make_chunk(kb, d, 0, "secret plans for the database")
        ChunkEmbedding.objects.create(
            chunk=chunk, knowledge_base=kb, embedder="minilm", embedding=np.ones(384) / np.sqrt(384)
        )
    _refresh_search_vectors(kb_a)
    _refresh_search_vectors(kb_b)
    readable = list(knowledge_bases_for(user=alice))
    dense = dense_search(knowledge_bases=readable, embedder="minilm", vector=np.ones(384), k=10)
    words = keyword_search(knowledge_bases=readable, query="secret database", k=10)
    allowed = set(Chunk.objects.filter(knowledge_base=kb_a).values_list("id", flat=True))
    assert {h.chunk_id for h in dense} == allowed
    assert {h.chunk_id for h in words} == allowed


@pytest.mark.django_db
def test_system_check_fails_when_dimension_disagrees_with_index():
    embedders = {
        "minilm": {
            "BACKEND": "retrieval.embedders.HashingEmbedder",
            "DIMENSION": 768,
            "OPTIONS": {},
        },
    }
    with override_settings(RAG_EMBEDDERS=embedders, RAG_DEFAULT_EMBEDDERS=["minilm"]):
        problems = check_vector_indexes(databases=["default"])
    assert any(isinstance(p, Error) and p.id == "ingestion.E001" for p in problems)
    assert check_vector_indexes(databases=["default"]) == []


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_real_worker_runs_a_task(celery_worker_process):
    from ragapp.tasks import ping

    assert ping.delay("hello").get(timeout=30) == "hello"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_healthz_ok_with_worker(admin_client, celery_worker_process):
    response = admin_client.get("/readyz")  # staff see every part
    body = response.json()
    assert response.status_code == 200, body
    assert {"database", "pgvector", "broker", "worker"} <= set(body["checks"])
    assert all(part["ok"] for part in body["checks"].values())


@pytest.mark.django_db
@pytest.mark.slow
def test_healthz_names_the_failing_part(admin_client, monkeypatch):
    from celery import Celery

    unreachable = Celery("unreachable", broker="redis://127.0.0.1:1/0", set_as_current=False)
    monkeypatch.setattr("ragapp.health._app", lambda: unreachable)
    response = admin_client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker", "worker"]
    assert body["checks"]["database"]["ok"] and body["checks"]["pgvector"]["ok"]


def test_production_settings_refuse_to_start_without_secrets():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL"}
    }
    env["RAG_ENV"] = "production"
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_docker_compose_matches_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"db", "redis", "web", "worker"} <= set(services)
    assert services["db"]["image"].startswith("pgvector/pgvector")
    assert "runserver" not in json.dumps(services["web"])
    for name in ("web", "worker"):
        env = services[name]["environment"]
        for var in ("DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY", "ALLOWED_HOSTS", "RAG_ENV"):
            assert var in env, f"{name} lacks {var}"
        assert env["RAG_ENV"] == "production"
    assert "celery" in " ".join(services["worker"]["command"])
