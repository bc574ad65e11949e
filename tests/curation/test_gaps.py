"""Knowledge gaps: which answers are filed, how they group, the actions and their recheck,
and the page and API (owners only). The hashing embedder is used throughout, so questions
meant to group share their words and the others share none."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from chat.models import Conversation, Feedback, Message, Mode
from curation.gaps import (
    cluster,
    gap_answer,
    gap_document_added,
    gap_mark_out_of_scope,
    gap_recheck,
    gaps_refresh,
    recheck_pending,
    recheck_ready,
)
from curation.models import FaqEntry, Gap, GapQuestion, GapStatus, ShareLink
from curation.tasks import recheck_gap
from ingestion.models import Document, DocumentStatus, Membership, Role
from ragapp.models import ApiToken

pytestmark = pytest.mark.django_db

HASH = {"BACKEND": "retrieval.embedders.HashingEmbedder", "DIMENSION": 64, "OPTIONS": {}}
PASSWORD = "how do I reset my password"
PARKING = "visitor car parking permit garage"


@pytest.fixture(autouse=True)
def hash_embedder(settings):
    settings.RAG_EMBEDDERS = {**settings.RAG_EMBEDDERS, "hash": HASH}
    settings.RAG_GAP_SIMILARITY = 0.8


@pytest.fixture
def owner(make_user):
    return make_user("owner")


@pytest.fixture
def kb(make_kb, owner):
    return make_kb(owner, "handbook", embedders=["hash"])


def ask(kb, question, *, mode=Mode.ABSTAINED, user=None, share_link=None, **extra):
    conversation = Conversation.objects.create(user=user, share_link=share_link)
    conversation.knowledge_bases.set([kb])
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content=question)
    return Message.objects.create(
        conversation=conversation,
        role=Message.Role.ASSISTANT,
        question=question,
        mode=mode,
        content="…",
        **extra,
    )


SURE = {"probability": 0.95, "threshold": 0.5}


def test_cluster_joins_vectors_above_the_threshold_only():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    near_a = np.array([0.95, 0.1])
    assert cluster([a, near_a, b, a], threshold=0.8) == [0, 0, 1, 0]
    assert cluster([a, near_a], threshold=0.999) == [0, 1]


def test_failing_answers_are_filed_with_their_reason(kb, owner):
    abstained = ask(kb, "alpha beta gamma", user=owner)
    down = ask(kb, "delta epsilon zeta", mode=Mode.GENERATED, user=owner, abstention=SURE)
    Feedback.objects.create(message=down, user=owner, rating=-1)
    barely = ask(
        kb,
        "eta theta iota",
        mode=Mode.GENERATED,
        user=owner,
        abstention={"probability": 0.52, "threshold": 0.5},
    )
    unsupported = ask(
        kb,
        "kappa lambda mu",
        mode=Mode.GENERATED,
        user=owner,
        abstention=SURE,
        unverified=[{"sentence": "x"}, {"sentence": "y"}],
    )
    ask(kb, "nu xi omicron", mode=Mode.GENERATED, user=owner, abstention=SURE)
    liked = ask(kb, "pi rho sigma", mode=Mode.GENERATED, user=owner, abstention=SURE)
    Feedback.objects.create(message=liked, user=owner, rating=1)
    ask(kb, "tau upsilon phi", mode=Mode.ERROR, user=owner)
    ask(kb, "chi psi omega", mode=Mode.FAQ, user=owner, abstention=SURE)

    result = gaps_refresh(knowledge_base=kb)

    reasons = dict(GapQuestion.objects.values_list("message_id", "reason"))
    assert reasons == {
        abstained.pk: GapQuestion.Reason.ABSTAINED,
        down.pk: GapQuestion.Reason.THUMBS_DOWN,
        barely.pk: GapQuestion.Reason.WEAK,
        unsupported.pk: GapQuestion.Reason.WEAK,
    }
    assert result.filed == 4 and result.new_gaps == 4


def test_same_question_joins_one_gap_and_others_start_their_own(kb, owner):
    first = ask(kb, PASSWORD, user=owner)
    ask(kb, PASSWORD + "?", user=owner)
    last = ask(kb, "How do I reset my password", user=owner)
    ask(kb, PARKING, user=owner)
    Message.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(days=3))

    gaps_refresh(knowledge_base=kb)

    gaps = {g.label.lower().rstrip("?"): g for g in Gap.objects.filter(knowledge_base=kb)}
    assert set(gaps) == {PASSWORD.lower(), PARKING}
    password = gaps[PASSWORD.lower()]
    assert password.questions.count() == 3
    assert password.first_seen < password.last_seen
    assert password.last_seen == Message.objects.get(pk=last.pk).created_at
    assert password.embedder == "hash" and len(password.centroid) == 64
    assert gaps[PARKING].questions.count() == 1


def test_refresh_files_each_answer_once_and_new_ones_join_existing_gaps(kb, owner):
    ask(kb, PASSWORD, user=owner)
    gaps_refresh(knowledge_base=kb)
    assert gaps_refresh(knowledge_base=kb).filed == 0
    ask(kb, PASSWORD, user=owner)
    result = gaps_refresh(knowledge_base=kb)
    assert (result.filed, result.new_gaps) == (1, 0)
    assert Gap.objects.get(knowledge_base=kb).questions.count() == 2


def test_share_link_visitors_questions_feed_gaps_and_other_kbs_do_not(kb, owner, make_kb):
    link = ShareLink.objects.create(owner=owner, token="t" * 20, title="Help")
    visitor = ask(kb, PASSWORD, share_link=link)
    other = make_kb(owner, "other", embedders=["hash"])
    ask(other, PARKING, user=owner)

    gaps_refresh(knowledge_base=kb)

    assert list(GapQuestion.objects.values_list("message_id", flat=True)) == [visitor.pk]


def test_written_answer_becomes_faq_entry_and_recheck_finds_it_answered(kb, owner):
    ask(kb, PASSWORD, user=owner)
    gaps_refresh(knowledge_base=kb)
    gap = Gap.objects.get(knowledge_base=kb)
    assert not recheck_pending(gap)

    entry = gap_answer(gap=gap, answer="Use the link on the login page.", user=owner)

    gap.refresh_from_db()
    assert gap.status == GapStatus.ANSWERED and gap.faq_entry == entry
    assert FaqEntry.objects.get(knowledge_base=kb).question == PASSWORD
    assert recheck_pending(gap)
    recheck = gap_recheck(gap=gap)
    assert (recheck["asked"], recheck["answered"]) == (1, 1)
    gap.refresh_from_db()
    assert not recheck_pending(gap) and gap.recheck["answered"] == 1


def test_later_questions_like_a_gap_are_counted_with_whether_they_were_answered(kb, owner):
    ask(kb, PASSWORD, user=owner)
    gaps_refresh(knowledge_base=kb)
    gap = Gap.objects.get(knowledge_base=kb)
    gap_mark_out_of_scope(gap=gap, user=owner)

    ask(kb, PASSWORD, user=owner)  # still not answered
    ask(kb, PASSWORD, mode=Mode.GENERATED, user=owner, abstention=SURE)  # answered
    ask(kb, PARKING, mode=Mode.GENERATED, user=owner, abstention=SURE)  # not like it
    gaps_refresh(knowledge_base=kb)

    gap.refresh_from_db()
    assert gap.status == GapStatus.OUT_OF_SCOPE
    assert gap.recheck["later"]["asked"] == 2
    assert gap.recheck["later"]["answered"] == 1
    gaps_refresh(knowledge_base=kb)  # counted once, not again
    gap.refresh_from_db()
    assert gap.recheck["later"]["asked"] == 2
    # Asked again over a knowledge base without documents: still not answered.
    recheck = gap_recheck(gap=gap)
    assert (recheck["asked"], recheck["answered"]) == (1, 0)
    assert recheck["later"]["asked"] == 2  # the counts since the action are kept


def test_recheck_waits_for_an_uploaded_document_and_the_task_runs_it(kb, owner):
    ask(kb, PASSWORD, user=owner)
    gaps_refresh(knowledge_base=kb)
    gap = Gap.objects.get(knowledge_base=kb)
    document = Document.objects.create(
        knowledge_base=kb, original_name="help.txt", content_hash="x" * 64, size=1
    )
    gap_document_added(gap=gap, document=document, user=owner)
    assert not recheck_ready(gap)
    Document.objects.filter(pk=document.pk).update(status=DocumentStatus.READY)
    gap.document.refresh_from_db()
    assert recheck_ready(gap)
    assert recheck_gap.apply(args=[gap.pk]).get()["asked"] == 1
    gap.refresh_from_db()
    assert not recheck_pending(gap)


def test_gaps_refresh_command_files_every_knowledge_base(kb, owner):
    ask(kb, PASSWORD, user=owner)
    out = StringIO()
    call_command("gaps_refresh", stdout=out)
    assert f"{kb.pk} handbook: 1 filed, 1 new gaps" in out.getvalue()


@pytest.fixture
def api(client, owner):
    raw = ApiToken.issue(owner, "test")[1]

    def get(path, token=raw):
        return client.get("/api/v1" + path, HTTP_AUTHORIZATION=f"Bearer {token}")

    return get


def test_api_lists_gaps_in_the_documented_shape(kb, owner, api):
    ask(kb, PASSWORD, user=owner)
    ask(kb, PASSWORD, user=owner)

    response = api(f"/knowledge-bases/{kb.pk}/gaps")

    assert response.status_code == 200
    [gap] = response.json()
    assert {"id", "label", "count", "questions", "status", "first_seen", "last_seen"} <= set(gap)
    assert gap["label"] == PASSWORD and gap["count"] == 2 and gap["status"] == "open"
    assert gap["questions"] == [PASSWORD, PASSWORD]
    assert api(f"/knowledge-bases/{kb.pk}/gaps?status=answered").json() == []


def test_api_gaps_are_for_owners_only(kb, make_user, api):
    member = make_user("member")
    Membership.objects.create(knowledge_base=kb, user=member, role=Role.EDITOR)
    stranger = make_user("stranger")
    path = f"/knowledge-bases/{kb.pk}/gaps"
    assert api(path, ApiToken.issue(member, "m")[1]).status_code == 403
    assert api(path, ApiToken.issue(stranger, "s")[1]).status_code == 404
    assert api(path, "rag_nope").status_code == 401


def test_gaps_page_lists_gaps_and_its_actions_work(client, kb, owner):
    ask(kb, PASSWORD, user=owner)
    ask(kb, PARKING, user=owner)
    client.force_login(owner)

    page = client.get(reverse("kb_gaps", args=[kb.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert PASSWORD in html and PARKING in html and "csrfmiddlewaretoken" in html
    password = Gap.objects.get(label=PASSWORD)
    parking = Gap.objects.get(label=PARKING)

    client.post(
        reverse("kb_gap_answer", args=[kb.pk, password.pk]),
        {"question": PASSWORD, "answer": "Use the link on the login page."},
    )
    password.refresh_from_db()
    assert password.status == GapStatus.ANSWERED
    assert password.faq_entry.answer == "Use the link on the login page."

    client.post(
        reverse("kb_gap_upload", args=[kb.pk, parking.pk]),
        {"file": SimpleUploadedFile("parking.txt", b"Visitors park in garage B with a permit.")},
    )
    parking.refresh_from_db()
    assert parking.status == GapStatus.DOCUMENT_ADDED
    assert parking.document == Document.objects.get(original_name="parking.txt")

    client.post(reverse("kb_gap_reopen", args=[kb.pk, parking.pk]))
    client.post(reverse("kb_gap_out_of_scope", args=[kb.pk, parking.pk]))
    parking.refresh_from_db()
    assert parking.status == GapStatus.OUT_OF_SCOPE and parking.action_by == owner


def test_gaps_page_is_for_owners_only(client, kb, make_user):
    member = make_user("member")
    Membership.objects.create(knowledge_base=kb, user=member, role=Role.EDITOR)
    client.force_login(member)
    assert client.get(reverse("kb_gaps", args=[kb.pk])).status_code == 403
    client.force_login(make_user("stranger"))
    assert client.get(reverse("kb_gaps", args=[kb.pk])).status_code == 404


def test_bench_gaps_reports_purity_per_threshold():
    out = StringIO()
    call_command(
        "bench_gaps", embedders="hash", thresholds="0.5,0.9", orders=1, json=True, stdout=out
    )
    report = json.loads(out.getvalue())
    assert report["questions"] > 150 and report["classes"] >= 40
    assert [r["threshold"] for r in report["results"]] == [0.5, 0.9]
    for row in report["results"]:
        assert 0 < row["purity"] <= 1 and 0 < row["inverse_purity"] <= 1
    assert report["best"]["hash"]["threshold"] in (0.5, 0.9)


@pytest.mark.models
def test_paraphrases_share_a_gap_under_the_default_embedder_and_threshold(make_kb, owner, settings):
    settings.RAG_GAP_SIMILARITY = 0.5  # the shipped default (the autouse fixture raises it)
    kb = make_kb(owner, "real", embedders=["minilm", "use"])
    for question in (
        "How do I reset my password?",
        "I forgot my password, how can I reset it?",
        "Is there parking for employees at the office?",
        "Where can employees park their cars at the office?",
    ):
        ask(kb, question, user=owner)

    gaps_refresh(knowledge_base=kb)

    groups = sorted(
        sorted(gap.questions.values_list("question", flat=True))
        for gap in Gap.objects.filter(knowledge_base=kb)
    )
    assert [len(g) for g in groups] == [2, 2]
    assert Gap.objects.filter(knowledge_base=kb, embedder="use").count() == 2


def test_gaps_page_still_lists_gaps_when_the_refresh_fails(client, kb, owner, settings):
    ask(kb, PASSWORD, user=owner)
    gaps_refresh(knowledge_base=kb)
    ask(kb, PARKING, user=owner)
    settings.RAG_EMBEDDERS = {**settings.RAG_EMBEDDERS, "hash": {**HASH, "BACKEND": "no.Such"}}
    client.force_login(owner)

    page = client.get(reverse("kb_gaps", args=[kb.pk]))

    assert page.status_code == 200
    assert PASSWORD in page.content.decode() and PARKING not in page.content.decode()
