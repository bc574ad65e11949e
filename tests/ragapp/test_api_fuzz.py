"""Property-based fuzzing of the API from its own OpenAPI schema: whatever the input, the
API answers with a client error or success, never a server error."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from ragapp.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)

pytestmark = pytest.mark.django_db
# Every operation is fuzzed either way; the quick loop (make test-fast) with fewer examples
# each (15 took a fifth of its time).
EXAMPLES = 4 if os.environ.get("RAG_TEST_FAST") == "1" else 15


@pytest.fixture
def auth_headers(make_user, make_kb):
    from ingestion.models import Document
    from ragapp.models import ApiToken

    user = make_user("fuzzer")
    kb = make_kb(user, "fuzz kb")  # so that ids 1.. sometimes exist
    Document.objects.create(knowledge_base=kb, original_name="a.txt", content_hash="f" * 64)
    return {"Authorization": f"Bearer {ApiToken.issue(user)[1]}"}


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_never_answers_500(case, auth_headers, settings_override):
    case.call_and_validate(headers=auth_headers, checks=[not_a_server_error])


@pytest.fixture
def settings_override(settings):
    # Like Django's test client: the WSGI app must not close the test's DB connection.
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    settings.OPENAI_BASE_URL = ""  # no network: the chat answers with extracts
    settings.RAG_API_RATE_LIMIT_PER_MINUTE = 0
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
