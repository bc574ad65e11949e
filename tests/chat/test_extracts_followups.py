"""Extracts read as answers; follow-ups are completed from the conversation without an LLM."""

import pytest

from chat import extracts
from chat.followups import carry_context, needs_context
from retrieval.types import Candidate


class WordOverlap:
    """A stand-in claim scorer: shared words (the real one is a sentence-embedding cosine)."""

    def score(self, query, passages):
        q = set(query.lower().split())
        return [len(q & set(p.lower().split())) / (len(q) or 1) for p in passages]


@pytest.fixture
def overlap(monkeypatch):
    monkeypatch.setattr(extracts, "scorer", WordOverlap)


def test_extract_never_repeats_the_question_or_a_heading(overlap):
    question = "How do I install R packages?"
    passage = Candidate(
        1,
        1,
        "r.pdf",
        "How do I install R packages?\nInstalling packages\n"
        "Use install.packages() to install R packages from CRAN.",
        "",
        heading_path="R admin > Installing packages",
    )
    answer = extracts.extract_answer(question, [passage])
    assert "install.packages()" in answer
    assert "How do I install R packages?" not in answer
    assert "- Installing packages" not in answer


def test_a_lead_in_keeps_what_it_introduces(overlap):
    passage = Candidate(
        1, 1, "r.pdf", "To update the installed packages, run:\nupdate.packages(ask = FALSE)", ""
    )
    answer = extracts.extract_answer("How do I update the installed packages?", [passage])
    assert "run: update.packages(ask = FALSE)" in answer


def test_chinese_lead_in_and_heading(overlap):
    passage = Candidate(
        1,
        1,
        "m.pdf",
        "页码\n在页脚中插入页码：\n选择 插入 页眉和页脚 页脚",
        "",
        heading_path="页码",
    )
    answer = extracts.extract_answer("如何 插入 页码", [passage])
    assert "插入页码： 选择" in answer
    assert answer.count("页码") == answer.count("插入页码")  # the bare heading is not repeated


@pytest.mark.parametrize(
    "question,needs",
    [
        ("And how do I update it later?", True),
        ("What licence is it distributed under?", True),
        ("What about Windows?", True),
        ("它的许可证是什么？", True),
        ("其中 Sponsor 具体负责什么？", True),
        ("那怎么更新？", True),
        ("What licence is the libtasn1 library itself distributed under?", False),
        ("Why does the parser reject a line like Version ::=INTEGER?", False),
        ("如何在页脚插入页码？", False),
    ],
)
def test_which_questions_need_the_conversation(question, needs):
    assert needs_context(question) is needs


def test_carry_context_only_when_needed():
    assert carry_context("How do I update it?", "How do I install R packages?") == (
        "How do I install R packages? How do I update it?"
    )
    assert carry_context("How do I remove a package in Debian?", "How do I install R?") == (
        "How do I remove a package in Debian?"
    )
    assert carry_context("Is it free?", "") == "Is it free?"
