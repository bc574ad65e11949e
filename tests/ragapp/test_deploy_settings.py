"""Production settings pass Django's deployment checklist without warnings."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _production_env(**overrides) -> dict[str, str]:
    # DJANGO_ALLOW_ASYNC_UNSAFE is set in this process by the browser tests (Playwright's
    # driver); a deployment never has it, and Django's check refuses it.
    dropped = {"DJANGO_DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped and k[:7] != "SECURE_"}
    env.update(
        DJANGO_SETTINGS_MODULE="ragapp.settings",
        RAG_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="rag.example.com",
        # check --deploy does not connect: nothing listens here.
        DATABASE_URL="postgres://rag:pw@127.0.0.1:1/rag",
    )
    env.update(overrides)
    return env


def _check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_check_deploy_is_clean_with_production_settings():
    result = _check_deploy(_production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.slow
def test_check_deploy_still_warns_when_https_is_turned_off():
    # The variables for a TLS-terminating proxy really reach the settings.
    result = _check_deploy(_production_env(SECURE_SSL_REDIRECT="false", SECURE_HSTS_SECONDS="0"))
    assert result.returncode != 0
    assert "security.W008" in result.stderr and "security.W004" in result.stderr


@pytest.mark.slow
def test_probes_answer_over_plain_http_while_pages_redirect_to_https():
    code = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "c = Client(HTTP_HOST='rag.example.com')\n"
        "page = c.get('/accounts/login/')\n"
        "print(page.status_code, page['Location'], c.get('/healthz').status_code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_production_env(ALLOWED_HOSTS="rag.example.com"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["301", "https://rag.example.com/accounts/login/", "200"]
