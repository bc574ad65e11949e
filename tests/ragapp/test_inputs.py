"""Odd input is refused with a 4xx, never a 500: non-ASCII digits where an id is expected,
lone surrogates and NUL characters in text bound for the database, NaN and infinities where
a number is expected."""

import json
import math

import pytest
from django.test import Client

from chat.models import Conversation, Feedback, Message
from ingestion.forms import ThresholdForm
from ragapp.models import ApiToken
from ragapp.validation import parse_float, parse_int, storable_text, text_problem
from retrieval.views import _number

pytestmark = pytest.mark.django_db

ODD_DIGITS = ["²", "٣", "１", "Ⅻ", "-1", "+1", "1.0", " ", "1e3", "0x1", "9" * 30, "1_000"]


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def kb(alice, make_kb):
    return make_kb(alice, "K")


@pytest.fixture
def bearer(alice):
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(alice, 't')[1]}"}


@pytest.fixture
def web(alice):
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    return client


@pytest.fixture
def api():
    return Client(raise_request_exception=False)


# --- the helpers --------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ODD_DIGITS)
def test_parse_int_takes_ascii_digits_only(raw):
    assert parse_int(raw) is None


def test_parse_int_and_float_accept_plain_numbers():
    assert parse_int("42") == 42 and parse_int(" 7 ") == 7 and parse_int(3) == 3
    assert parse_float("0.25") == 0.25 and parse_float("-1") == -1.0


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-Infinity", "1e999", "²", "x", None])
def test_parse_float_refuses_non_finite(raw):
    assert parse_float(raw) is None


def test_text_checks():
    assert text_problem("fine 中文") is None
    assert "NUL" in text_problem("a\x00b")
    assert "surrogate" in text_problem("a\ud800b")
    assert storable_text("a\x00b\udfffc") == "abc"


# --- /v1 (OpenAI-compatible) --------------------------------------------------------------


@pytest.mark.parametrize("model", ["kb-²", "kb-٣", "kb-１", "kb-1+kb-²", "kb-" + "9" * 40])
def test_openai_model_with_odd_digits_is_404(api, bearer, kb, model):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    response = api.post("/v1/chat/completions", body, content_type="application/json", **bearer)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("content", ["\\ud800", "a\\udfffb", "\\u0000", "ok\\ud83d"])
def test_openai_messages_with_unstorable_text_are_400(api, bearer, kb, content):
    raw = (
        f'{{"model": "kb-{kb.pk}", "messages": [{{"role": "assistant", "content": "earlier"}},'
        f' {{"role": "user", "content": "{content}"}}]}}'
    )
    response = api.post("/v1/chat/completions", raw, content_type="application/json", **bearer)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert not Conversation.objects.exists()


# --- /api/v1 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,raw",
    [
        ("/api/v1/knowledge-bases", '{"name": "a\\ud800"}'),
        ("/api/v1/knowledge-bases", '{"name": "ok", "description": "\\udc00"}'),
        ("/api/v1/chat", '{"question": "why\\ud800", "knowledge_bases": [1]}'),
        ("/api/v1/search", '{"query": "\\ud800", "knowledge_bases": [1]}'),
    ],
)
def test_api_text_with_lone_surrogates_is_422(api, bearer, kb, path, raw):
    response = api.post(path, raw, content_type="application/json", **bearer)
    assert response.status_code == 422, response.content
    assert response.json()["error"]["code"] == "invalid"


def strict_json(token):
    raise AssertionError(f"{token} is not JSON")


@pytest.mark.parametrize(
    "raw",
    [
        '{"rerank_min_score": NaN}',
        '{"rerank_min_score": Infinity}',
        '{"rerank_min_score": -Infinity}',
        '{"rerank_min_score": 1e999}',
        '{"rerank_max_drop": NaN}',
        '{"rerank_max_drop": 1e999}',
    ],
)
def test_api_refuses_non_finite_thresholds(api, bearer, kb, raw):
    response = api.patch(
        f"/api/v1/knowledge-bases/{kb.pk}", raw, content_type="application/json", **bearer
    )
    assert response.status_code == 422, response.content
    json.loads(response.content, parse_constant=strict_json)  # no NaN token in the error
    kb.refresh_from_db()
    assert kb.rerank_min_score is None and kb.rerank_max_drop is None


def test_api_still_takes_finite_thresholds(api, bearer, kb):
    response = api.patch(
        f"/api/v1/knowledge-bases/{kb.pk}",
        {"rerank_min_score": -2.5, "rerank_max_drop": 0.4},
        content_type="application/json",
        **bearer,
    )
    assert response.status_code == 200
    kb.refresh_from_db()
    assert kb.rerank_min_score == -2.5 and kb.rerank_max_drop == 0.4


# --- web ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_threshold_form_refuses_non_finite(kb, raw):
    form = ThresholdForm({"rerank_top_k": "5", "rerank_min_score": raw}, instance=kb)
    assert not form.is_valid() and "rerank_min_score" in form.errors
    form = ThresholdForm({"rerank_top_k": "5", "rerank_max_drop": raw}, instance=kb)
    assert not form.is_valid() and "rerank_max_drop" in form.errors


def test_threshold_view_keeps_finite_values_only(web, kb):
    response = web.post(f"/kb/{kb.pk}/thresholds", {"rerank_top_k": "5", "rerank_min_score": "nan"})
    assert response.status_code == 302
    kb.refresh_from_db()
    assert kb.rerank_min_score is None or math.isfinite(kb.rerank_min_score)


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e999", "x", ""])
def test_hit_test_trial_cutoffs_ignore_non_finite(raw):
    assert _number(raw, float) is None


@pytest.mark.parametrize("raw", ["²", "٣", "1.5", "-3"])
def test_hit_test_trial_top_k_takes_ascii_digits_only(raw):
    assert _number(raw, int) is None
    assert _number("8", int) == 8 and _number("0.5", float) == 0.5


@pytest.mark.parametrize("kb_value", ["²", "٣", "１", "abc", "9" * 40])
def test_chat_ask_with_odd_kb_ids_is_400(web, kb, kb_value):
    response = web.post("/chat/ask", {"question": "hi", "kb": [kb_value]})
    assert response.status_code == 400


@pytest.mark.parametrize("value", ["abc", "²", "-1"])
def test_chat_ask_with_odd_conversation_id_is_404(web, kb, value):
    response = web.post("/chat/ask", {"question": "hi", "conversation": value})
    assert response.status_code == 404


def test_chat_ask_with_nul_in_question_is_400(web, kb):
    response = web.post("/chat/ask", {"question": "a\x00b", "kb": [str(kb.pk)]})
    assert response.status_code == 400
    assert not Conversation.objects.exists()


def test_chat_page_with_odd_kb_is_not_a_500(web, kb):
    assert web.get("/chat/?kb=²").status_code == 200


def test_rename_and_feedback_drop_nul(web, alice, kb):
    conversation = Conversation.objects.create(user=alice, title="t")
    answer = Message.objects.create(conversation=conversation, role="assistant", content="a")
    response = web.post(f"/chat/{conversation.pk}/rename", {"title": "new\x00 title"})
    assert response.status_code == 302
    conversation.refresh_from_db()
    assert conversation.title == "new title"
    response = web.post(
        f"/chat/messages/{answer.pk}/feedback", {"rating": "1", "comment": "go\x00od"}
    )
    assert response.status_code == 200
    assert Feedback.objects.get().comment == "good"
    assert web.post(f"/chat/messages/{answer.pk}/feedback", {"rating": "²"}).status_code == 400


@pytest.mark.parametrize("value", ["abc", "²", "1.0", "-1"])
def test_token_revoke_with_odd_id_is_400(web, alice, value):
    token, _raw = ApiToken.issue(alice, "keep")
    response = web.post("/accounts/tokens/", {"revoke": value})
    assert response.status_code == 400
    token.refresh_from_db()
    assert token.revoked_at is None


def test_token_name_with_nul_is_stored_without_it(web, alice):
    response = web.post("/accounts/tokens/", {"name": "ci\x00bot"})
    assert response.status_code == 200
    assert ApiToken.objects.get(user=alice).name == "cibot"


def test_knowledge_base_form_refuses_nul(web):
    response = web.post("/kb/", {"name": "a\x00b", "description": ""})
    assert response.status_code == 200  # the form again, with its error
    from ingestion.models import KnowledgeBase

    assert not KnowledgeBase.objects.exists()


def test_openai_raw_surrogate_bytes_are_400(api, bearer, kb):
    # json.loads decodes UTF-8 bytes with "surrogatepass": \xed\xa0\x80 becomes '\ud800'.
    raw = b'{"model": "kb-%d", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}' % kb.pk
    response = api.post("/v1/chat/completions", raw, content_type="application/json", **bearer)
    assert response.status_code == 400
    assert not Conversation.objects.exists()
