"""An answer over several knowledge bases is filed in the gaps of exactly one of them,
whichever refreshes first: the lowest id among the conversation's knowledge bases that its
sources came from, else the conversation's lowest id (curation.gaps.filed_under)."""

from __future__ import annotations

import hashlib

import pytest

from chat.models import Conversation, Message, Mode
from curation.gaps import gaps_refresh
from curation.models import GapQuestion
from ingestion.models import Document

pytestmark = pytest.mark.django_db

HASH = {"BACKEND": "retrieval.embedders.HashingEmbedder", "DIMENSION": 64, "OPTIONS": {}}


@pytest.fixture(autouse=True)
def hash_embedder(settings):
    settings.RAG_EMBEDDERS = {**settings.RAG_EMBEDDERS, "hash": HASH}
    settings.RAG_GAP_SIMILARITY = 0.8


@pytest.fixture
def kbs(make_user, make_kb):
    """Three knowledge bases of different owners, in id order."""
    return [make_kb(make_user(f"owner{i}"), f"kb{i}", embedders=["hash"]) for i in range(3)]


def doc(kb) -> Document:
    return Document.objects.create(
        knowledge_base=kb,
        original_name=f"{kb.name}.md",
        content_hash=hashlib.sha256(kb.name.encode()).hexdigest(),
        status="ready",
    )


def ask(knowledge_bases, question, *, source_docs=()) -> Message:
    conversation = Conversation.objects.create()
    conversation.knowledge_bases.set(knowledge_bases)
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        question=question,
        mode=Mode.ABSTAINED,
        content="…",
        sources=[
            {"n": n, "chunk_id": None, "document_id": d.pk, "document": d.original_name}
            for n, d in enumerate(source_docs, start=1)
        ],
    )


def filed_in(message):
    return GapQuestion.objects.select_related("gap").get(message=message).gap.knowledge_base_id


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_filed_under_the_knowledge_base_its_sources_came_from_whatever_the_order(kbs, order):
    a, b, c = kbs
    doc_a, doc_b, doc_c = doc(a), doc(b), doc(c)
    from_b = ask([a, b, c], "where is the visitor parking", source_docs=[doc_b])
    from_b_and_c = ask([a, b, c], "who approves travel expenses", source_docs=[doc_c, doc_b])
    no_sources = ask([c, b], "what is the wifi password")
    from_elsewhere = ask([b, c], "when is the office closed", source_docs=[doc_a])
    for i in order:
        gaps_refresh(knowledge_base=kbs[i])
    assert filed_in(from_b) == b.pk
    assert filed_in(from_b_and_c) == b.pk  # the lowest id of the two
    assert filed_in(no_sources) == b.pk  # the conversation's lowest id
    assert filed_in(from_elsewhere) == b.pk  # a source outside the conversation does not count
    assert GapQuestion.objects.count() == 4
    assert not GapQuestion.objects.filter(gap__knowledge_base=a).exists()


def test_answers_of_other_knowledge_bases_do_not_hold_up_a_refresh(kbs):
    a, b, _c = kbs
    doc_a, doc_b = doc(a), doc(b)
    theirs = [ask([a, b], f"question {i} about parking", source_docs=[doc_b]) for i in range(3)]
    mine = ask([a, b], "how do I reset my password", source_docs=[doc_a])
    result = gaps_refresh(knowledge_base=a, batch=1)
    assert result.filed == 1 and filed_in(mine) == a.pk
    assert not GapQuestion.objects.filter(message__in=theirs).exists()
    gaps_refresh(knowledge_base=b)
    assert {filed_in(m) for m in theirs} == {b.pk}


def test_sources_that_are_not_a_list_fall_back_to_the_first_knowledge_base(kbs):
    a, b, _c = kbs
    message = ask([b, a], "where is the canteen")
    Message.objects.filter(pk=message.pk).update(sources={"unexpected": True})
    gaps_refresh(knowledge_base=b)
    assert not GapQuestion.objects.exists()
    gaps_refresh(knowledge_base=a)
    assert filed_in(message) == a.pk
