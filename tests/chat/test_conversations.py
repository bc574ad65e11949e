"""Cutting a conversation back to a question (regenerate, edit and resend), the feedback
shown when a conversation reopens, and the knowledge bases a new chat starts with."""

import pytest

from chat.conversations import conversation_truncate
from chat.models import Conversation, Feedback, Message, Mode
from ingestion.models import Document, DocumentStatus
from ragapp.models import ApiToken

pytestmark = pytest.mark.django_db


def make_conversation(user, kbs=(), turns=("first?", "second?", "third?")):
    conversation = Conversation.objects.create(user=user, title=turns[0])
    conversation.knowledge_bases.set(kbs)
    answers = []
    for q in turns:
        Message.objects.create(conversation=conversation, role="user", content=q)
        answers.append(
            Message.objects.create(
                conversation=conversation,
                role="assistant",
                question=q,
                content=f"answer to {q}",
                mode=Mode.GENERATED,
            )
        )
    return conversation, answers


def contents(conversation):
    return list(conversation.messages.values_list("content", flat=True))


def test_truncate_from_an_answer_removes_its_question_and_all_after(make_user):
    conversation, answers = make_conversation(make_user("alice"))
    Feedback.objects.create(message=answers[1], user=conversation.user, rating=1)
    question = conversation_truncate(conversation=conversation, message=answers[1])
    assert question == "second?"
    assert contents(conversation) == ["first?", "answer to first?"]
    assert not Feedback.objects.exists()


def test_truncate_from_a_question(make_user):
    conversation, _ = make_conversation(make_user("alice"))
    third = conversation.messages.get(content="third?")
    assert conversation_truncate(conversation=conversation, message=third) == "third?"
    assert contents(conversation)[-1] == "answer to second?"


def test_truncate_endpoint_is_scoped_to_the_users_own_conversation(make_user, client):
    alice, mallory = make_user("alice"), make_user("mallory")
    conversation, answers = make_conversation(alice)
    other, other_answers = make_conversation(alice, turns=("elsewhere?",))
    url = f"/chat/{conversation.pk}/truncate"

    client.force_login(mallory)
    assert client.post(url, {"message": answers[0].pk}).status_code == 404
    assert conversation.messages.count() == 6

    client.force_login(alice)
    assert client.get(url).status_code == 405
    # A message of another conversation, a missing one, garbage: 404, nothing deleted.
    for bad in (other_answers[0].pk, 999999, 10**30, "x", ""):
        assert client.post(url, {"message": bad}).status_code == 404
    assert conversation.messages.count() == 6 and other.messages.count() == 2

    response = client.post(url, {"message": answers[2].pk})
    assert response.status_code == 200
    assert response.json() == {"conversation_id": conversation.pk, "question": "third?"}
    assert conversation.messages.count() == 4


def test_truncate_needs_csrf(make_user):
    from django.test import Client

    alice = make_user("alice")
    conversation, answers = make_conversation(alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(f"/chat/{conversation.pk}/truncate", {"message": answers[0].pk})
    assert response.status_code == 403
    assert conversation.messages.count() == 6


def test_reopened_conversation_carries_the_users_feedback(make_user, client):
    alice = make_user("alice")
    conversation, answers = make_conversation(alice)
    Feedback.objects.create(message=answers[0], user=alice, rating=-1)
    client.force_login(alice)
    messages = client.get(f"/chat/{conversation.pk}.json").json()["messages"]
    assert [m["feedback"] for m in messages] == [None, -1, None, None, None, None]
    token = ApiToken.issue(alice)[1]
    api = client.get(
        f"/api/v1/conversations/{conversation.pk}", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert api.status_code == 200 and api.json()["messages"][1]["feedback"] == -1


def ready_document(kb, name="a.md"):
    return Document.objects.create(
        knowledge_base=kb, original_name=name, status=DocumentStatus.READY
    )


def checked_kbs(client, url="/chat/"):
    response = client.get(url)
    assert response.status_code == 200
    return {
        kb.pk for kb in response.context["knowledge_bases"] if kb.pk in response.context["selected"]
    }


def test_new_chat_starts_with_the_last_conversations_knowledge_bases(make_user, make_kb, client):
    alice = make_user("alice")
    manuals, notes, empty = (
        make_kb(alice, "manuals"),
        make_kb(alice, "notes"),
        make_kb(alice, "new"),
    )
    ready_document(manuals)
    ready_document(notes)
    client.force_login(alice)
    # No conversation yet: the first knowledge base with ready documents, never an empty one.
    assert checked_kbs(client) == {manuals.pk}
    make_conversation(alice, kbs=[notes])
    assert checked_kbs(client) == {notes.pk}
    assert checked_kbs(client, f"/chat/?kb={empty.pk}") == {empty.pk}
    response = client.get("/chat/")
    ready = {kb.name: kb.ready_documents for kb in response.context["knowledge_bases"]}
    assert ready == {"manuals": 1, "notes": 1, "new": 0}
    assert b'data-ready="0"' in response.content and b'id="kb-warning"' in response.content
