"""Every HTML page carries the site's Content-Security-Policy, and no template needs more."""

import re

import pytest
from django.urls import reverse

from tests.conftest import ROOT

pytestmark = pytest.mark.django_db


def test_html_pages_get_the_site_policy_and_json_does_not(client, make_user, settings):
    policy = settings.RAG_CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    for url in (reverse("login"), reverse("signup"), "/no-such-page/"):
        assert client.get(url)["Content-Security-Policy"] == policy, url
    client.force_login(make_user("ann", is_staff=True, is_superuser=True))
    for url in (reverse("kb_list"), reverse("dashboard"), reverse("admin:index")):
        assert client.get(url)["Content-Security-Policy"] == policy, url
    assert "Content-Security-Policy" not in client.get(reverse("healthz"))


def test_a_response_keeps_its_own_policy_and_the_setting_can_turn_it_off(client, settings):
    from django.http import HttpResponse

    from ragapp.middleware import ContentSecurityPolicyMiddleware

    def own(request):
        response = HttpResponse("<p>x</p>")
        response["Content-Security-Policy"] = "sandbox"
        return response

    assert ContentSecurityPolicyMiddleware(own)(None)["Content-Security-Policy"] == "sandbox"
    settings.RAG_CONTENT_SECURITY_POLICY = ""
    assert "Content-Security-Policy" not in client.get(reverse("login"))


def test_templates_have_no_inline_script_style_or_javascript_urls():
    # What the policy would refuse: inline <script>/<style>, style="" and on*="" attributes,
    # javascript: URLs. Data blocks (<script type="application/json">) are allowed.
    forbidden = re.compile(
        r"<script(?![^>]*\b(?:src=|type=\"application/json\"))[^>]*>"
        r"|<style\b|\sstyle=|\son[a-z]+=|=\s*[\"']?\s*javascript:",
        re.I,
    )
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in (ROOT / "templates").rglob("*.html")
        for match in forbidden.finditer(path.read_text())
    ]
    assert not offenders, offenders
