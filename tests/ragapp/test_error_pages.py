"""With DEBUG off (the default, also under `make run`), errors get our pages: a 404 lists no
URL patterns and a 500 shows no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.urls import path

from ragapp.urls import urlpatterns as app_urlpatterns
from tests.conftest import ROOT


def _explode(request):
    raise RuntimeError("secret internals in the traceback")


urlpatterns = [path("test-only/explode", _explode), *app_urlpatterns]


def _settings_in_a_fresh_process(**env_overrides) -> str:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_DEBUG"} | env_overrides
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DEBUG, settings.WHITENOISE_USE_FINDERS)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.slow
def test_debug_is_off_unless_asked_for_and_static_files_still_served():
    assert _settings_in_a_fresh_process() == "False True"
    assert _settings_in_a_fresh_process(DJANGO_DEBUG="1") == "True True"


@pytest.mark.django_db
def test_unknown_url_gets_our_404_page_without_the_url_list(client, settings):
    settings.DEBUG = False
    response = client.get("/no/such/page")
    assert response.status_code == 404
    text = response.content.decode()
    assert "This page does not exist" in text
    assert "Using the URLconf" not in text and "admin/" not in text


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_a_failing_view_gets_our_500_page_without_a_traceback(client, settings):
    settings.DEBUG = False
    client.raise_request_exception = False
    response = client.get("/test-only/explode")
    assert response.status_code == 500
    text = response.content.decode()
    assert "Something went wrong on our side" in text
    assert "secret internals" not in text and "Traceback" not in text
    assert "css/app.css" in text  # styled, although rendered without a request


@pytest.mark.django_db
def test_static_files_are_served_with_debug_off(client, settings):
    settings.DEBUG = False
    response = client.get("/static/css/app.css")
    assert response.status_code == 200
