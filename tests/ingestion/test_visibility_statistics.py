"""Keyword scores a member sees never depend on documents hidden from them: where a knowledge
base holds a restricted document a user may not see, BM25 statistics come from the chunks
that user may see (issue #16's rule that a query is scoped before it touches chunks, kept
through the per-knowledge-base statistics of issue #15 part 5)."""

from __future__ import annotations

import pytest
from django.contrib.postgres.search import SearchVector

from ingestion.models import Chunk, Document, Membership, Role
from ingestion.scope import document_scope
from ingestion.services import DocumentVisibility, document_set_visibility
from retrieval.recall import keyword_search
from retrieval.text import TS_CONFIG
from tests.conftest import make_chunk

pytestmark = pytest.mark.django_db


def _document(kb, name: str, texts: list[str]) -> Document:
    doc = Document.objects.create(
        knowledge_base=kb, original_name=name, content_hash=name.ljust(64, "x")
    )
    for i, text in enumerate(texts):
        make_chunk(kb, doc, i, text)
    Chunk.objects.filter(document=doc).update(
        search_vector=SearchVector("search_text", config=TS_CONFIG)
    )
    return doc


def _scores(kb, user) -> dict[int, float]:
    scope = document_scope(user=user, knowledge_bases=[kb])
    hits = keyword_search(knowledge_bases=[kb], query="alpha beta", k=10, scope=scope)
    return {h.chunk_id: round(h.score, 9) for h in hits}


def test_a_hidden_documents_words_do_not_change_a_members_scores(make_user, make_kb):
    owner, member = make_user("owner"), make_user("member")
    kb = make_kb(owner, "kb")
    Membership.objects.create(knowledge_base=kb, user=member, role=Role.VIEWER)
    _document(kb, "open.txt", ["alpha beta gamma", "beta delta", "gamma delta epsilon"])
    secret = _document(kb, "secret.txt", [f"alpha report {i}" for i in range(30)])
    document_set_visibility(document=secret, visible_to=DocumentVisibility())

    with_secret = _scores(kb, member)
    assert with_secret and all(
        Chunk.objects.get(pk=pk).document.original_name == "open.txt" for pk in with_secret
    )
    secret.delete()
    assert _scores(kb, member) == with_secret  # the same scores: the secret never counted

    # The owner sees every document: their statistics are the knowledge base's.
    again = _document(kb, "secret2.txt", [f"alpha report {i}" for i in range(30)])
    document_set_visibility(document=again, visible_to=DocumentVisibility())
    owner_scores = _scores(kb, owner)
    assert set(with_secret) <= set(owner_scores)
    open_chunk = next(iter(with_secret))
    assert owner_scores[open_chunk] != with_secret[open_chunk]  # "alpha" is common for them


def test_scope_says_whether_it_hides_documents(make_user, make_kb):
    owner, member = make_user("o"), make_user("m")
    kb = make_kb(owner, "kb")
    Membership.objects.create(knowledge_base=kb, user=member, role=Role.VIEWER)
    doc = _document(kb, "a.txt", ["alpha"])
    assert not document_scope(user=member, knowledge_bases=[kb]).hides_documents([kb.pk])
    document_set_visibility(document=doc, visible_to=DocumentVisibility(users=(member,)))
    assert not document_scope(user=member, knowledge_bases=[kb]).hides_documents([kb.pk])
    document_set_visibility(document=doc, visible_to=DocumentVisibility())
    assert document_scope(user=member, knowledge_bases=[kb]).hides_documents([kb.pk])
    assert not document_scope(user=owner, knowledge_bases=[kb]).hides_documents([kb.pk])
    assert not document_scope(user=None, knowledge_bases=[kb]).hides_documents([kb.pk])
    # A metadata filter hides nothing the user could not see anyway.
    filtered = document_scope(user=owner, knowledge_bases=[kb], filters={"tags": ["x"]})
    assert not filtered.hides_documents([kb.pk])


def test_recall_filters_only_what_can_exclude_an_indexed_chunk(make_user, make_kb):
    """Review is implied (only approved documents are indexed), visibility only counts where
    something is hidden from this user, a metadata filter always does; every condition is
    limited to the searched knowledge bases."""
    owner, member = make_user("o2"), make_user("m2")
    kb, other = make_kb(owner, "kb2"), make_kb(owner, "other")
    Membership.objects.create(knowledge_base=kb, user=member, role=Role.VIEWER)
    doc = _document(kb, "b.txt", ["alpha"])
    assert document_scope(user=None).recall_sql(knowledge_base_ids=[kb.pk]) == ("", [])
    member_scope = document_scope(user=member, knowledge_bases=[kb])
    assert member_scope.recall_sql(knowledge_base_ids=[kb.pk]) == ("", [])
    # Without the knowledge bases, visibility cannot be judged and stays.
    assert "restricted" in member_scope.recall_sql()[0]

    document_set_visibility(document=doc, visible_to=DocumentVisibility())
    hidden = document_scope(user=member, knowledge_bases=[kb])
    sql, params = hidden.recall_sql(knowledge_base_ids=[kb.pk, other.pk])
    assert "restricted" in sql and "review_status" not in sql
    assert "d.knowledge_base_id = ANY" in sql and params[0] == sorted([kb.pk, other.pk])
    filtered = document_scope(user=owner, knowledge_bases=[kb], filters={"tags": ["x"]})
    sql, params = filtered.recall_sql(knowledge_base_ids=[kb.pk])
    assert "tags" in sql and "restricted" not in sql and ["x"] in params
    # The member sees nothing of the hidden document; the owner does.
    assert keyword_search(knowledge_bases=[kb], query="alpha", k=5, scope=hidden) == []
    owner_scope = document_scope(user=owner, knowledge_bases=[kb])
    assert len(keyword_search(knowledge_bases=[kb], query="alpha", k=5, scope=owner_scope)) == 1
