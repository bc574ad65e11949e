"""Requests over the size limits (body size, number of files, number of fields) are 413:
JSON for /api/v1 and /v1 and for the upload portal's scripts, a page for the browser."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from ingestion.models import KnowledgeBase
from ragapp.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bearer(alice):
    return {"HTTP_AUTHORIZATION": f"Bearer {ApiToken.issue(alice, 't')[1]}"}


@pytest.fixture
def web(alice):
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    return client


def files(n: int) -> list:
    return [SimpleUploadedFile(f"f{i}.txt", f"file {i}".encode()) for i in range(n)]


def assert_api_413(response):
    assert response.status_code == 413, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "too_large" and error["message"]


def test_api_upload_over_the_files_limit_is_413(bearer, alice, make_kb, settings):
    settings.RAG_MAX_FILES_PER_UPLOAD = 2
    kb = make_kb(alice)
    response = Client().post(
        f"/api/v1/knowledge-bases/{kb.pk}/documents", {"files": files(3)}, **bearer
    )
    assert_api_413(response)
    assert "at most 2 files" in response.json()["error"]["message"]
    assert not kb.documents.exists()


def test_api_upload_over_djangos_files_limit_is_413(bearer, alice, make_kb, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    kb = make_kb(alice)
    response = Client(raise_request_exception=False).post(
        f"/api/v1/knowledge-bases/{kb.pk}/documents", {"files": files(3)}, **bearer
    )
    assert_api_413(response)
    assert not kb.documents.exists()


def test_api_json_body_over_the_size_limit_is_413(bearer, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"name": "K", "description": "x" * 2000})
    response = Client(raise_request_exception=False).post(
        "/api/v1/knowledge-bases", body, content_type="application/json", **bearer
    )
    assert_api_413(response)
    assert not KnowledgeBase.objects.exists()


def test_openai_compatible_body_over_the_size_limit_is_413(bearer, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"model": "kb-1", "messages": [{"role": "user", "content": "x" * 2000}]})
    response = Client(raise_request_exception=False).post(
        "/v1/chat/completions", body, content_type="application/json", **bearer
    )
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_web_form_over_the_size_limit_is_a_413_page(web, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = web.post("/kb/", {"name": "K", "description": "x" * 2000})
    assert response.status_code == 413
    assert response["Content-Type"].startswith("text/html")
    assert b"too large" in response.content.lower()
    assert not KnowledgeBase.objects.exists()


def test_web_form_with_too_many_fields_is_413(web, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    response = web.post("/kb/", {f"f{i}": "x" for i in range(10)})
    assert response.status_code == 413


def test_portal_upload_over_djangos_files_limit_is_413_json(web, alice, make_kb, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    kb = make_kb(alice)
    response = web.post(
        f"/kb/{kb.pk}/upload", {"files": files(3)}, HTTP_X_REQUESTED_WITH="XMLHttpRequest"
    )
    assert response.status_code == 413
    body = response.json()
    assert body["accepted"] == [] and "Too many files" in body["refused"][0]["error"]
    # and as a page for a plain form post
    page = web.post(f"/kb/{kb.pk}/upload", {"files": files(3)})
    assert page.status_code == 413 and b"Too many files" in page.content
    assert not kb.documents.exists()


def test_portal_upload_over_the_files_limit_is_413_json(web, alice, make_kb, settings):
    settings.RAG_MAX_FILES_PER_UPLOAD = 2
    kb = make_kb(alice)
    response = web.post(
        f"/kb/{kb.pk}/upload", {"files": files(3)}, HTTP_X_REQUESTED_WITH="XMLHttpRequest"
    )
    assert response.status_code == 413
    assert "Too many files" in response.json()["refused"][0]["error"]
    assert not kb.documents.exists()


def test_other_bad_requests_stay_400(client):
    response = client.get("/kb/", HTTP_HOST="evil.example.com:99999")
    assert response.status_code == 400
