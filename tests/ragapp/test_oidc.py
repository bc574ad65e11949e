"""Single sign-on with OpenID Connect, against a real provider that the test serves on
127.0.0.1 (discovery, JWKS, authorize, token, userinfo), driven through Django's test client."""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth.models import Group
from django.test import Client
from jwt.algorithms import RSAAlgorithm

from ragapp import oidc

CLIENT_ID = "ragapp-test"
CLIENT_SECRET = "s3cret-for-tests"


class Provider:
    """A minimal OpenID provider. Tests change `claims`, `audience` or `signing_key`."""

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signing_key = self.key
        self.audience = CLIENT_ID
        self.claims = {
            "sub": "u-123",
            "preferred_username": "carol",
            "email": "carol@example.org",
            "given_name": "Carol",
            "groups": ["research", "staff-readers"],
        }
        self.codes: dict[str, dict] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, body, status=200):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self._json(
                        {
                            "issuer": provider.issuer,
                            "authorization_endpoint": provider.issuer + "/authorize",
                            "token_endpoint": provider.issuer + "/token",
                            "userinfo_endpoint": provider.issuer + "/userinfo",
                            "jwks_uri": provider.issuer + "/jwks",
                        }
                    )
                elif url.path == "/jwks":
                    jwk = RSAAlgorithm.to_jwk(provider.key.public_key(), as_dict=True)
                    self._json({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]})
                elif url.path == "/authorize":
                    # Signs the user in at once and sends the browser back with a code.
                    assert query["client_id"] == CLIENT_ID
                    assert "openid" in query["scope"].split()
                    code = secrets.token_urlsafe(8)
                    provider.codes[code] = query
                    back = urlencode({"code": code, "state": query["state"]})
                    self.send_response(302)
                    self.send_header("Location", f"{query['redirect_uri']}?{back}")
                    self.end_headers()
                elif url.path == "/userinfo":
                    if self.headers.get("Authorization") != "Bearer access-token":
                        return self._json({"error": "invalid_token"}, 401)
                    self._json(provider.claims)
                else:
                    self._json({"error": "not found"}, 404)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                request = provider.codes.pop(form.get("code", ""), None)
                if (
                    self.path != "/token"
                    or request is None
                    or form.get("client_secret") != CLIENT_SECRET
                    or form.get("redirect_uri") != request["redirect_uri"]
                ):
                    return self._json({"error": "invalid_grant"}, 400)
                now = int(time.time())
                id_token = jwt.encode(
                    {
                        "iss": provider.issuer,
                        "sub": provider.claims["sub"],
                        "aud": provider.audience,
                        "iat": now,
                        "exp": now + 300,
                        "nonce": request.get("nonce"),
                    },
                    provider.signing_key,
                    algorithm="RS256",
                    headers={"kid": "k1"},
                )
                self._json(
                    {"access_token": "access-token", "token_type": "Bearer", "id_token": id_token}
                )

        return Handler


@pytest.fixture
def provider(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    p = Provider()
    p.thread.start()
    yield p
    p.server.shutdown()
    p.server.server_close()


@pytest.fixture
def sso(settings, provider, db):
    settings.RAG_OIDC_ENABLED = True
    settings.RAG_OIDC_ISSUER = provider.issuer
    settings.RAG_OIDC_CLIENT_ID = CLIENT_ID
    settings.RAG_OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.RAG_OIDC_NAME = "Example SSO"
    settings.RAG_OIDC_GROUPS_CLAIM = "groups"
    return provider


def sign_in(client: Client, *, next_url: str = "") -> tuple[object, bool]:
    """The whole code flow in one browser; returns the callback's response, logged in?"""
    start = client.get("/oidc/authenticate/" + (f"?next={next_url}" if next_url else ""))
    assert start.status_code == 302
    at_provider = requests.get(start["Location"], allow_redirects=False, timeout=10)
    assert at_provider.status_code == 302
    back = urlsplit(at_provider.headers["Location"])
    assert back.path == "/oidc/callback/"
    response = client.get(f"{back.path}?{back.query}")
    return response, "_auth_user_id" in client.session


def test_login_page_offers_single_sign_on_when_configured(sso, client):
    page = client.get("/accounts/login/").content.decode()
    assert "Log in with Example SSO" in page
    assert 'href="/oidc/authenticate/"' in page


def test_authenticate_redirects_to_the_providers_authorize_endpoint(sso, client):
    response = client.get("/oidc/authenticate/")
    assert response.status_code == 302
    target = urlsplit(response["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == sso.issuer + "/authorize"
    query = parse_qs(target.query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["scope"] == ["openid email profile"]
    assert query["redirect_uri"] == ["http://testserver/oidc/callback/"]
    assert query["nonce"] and query["state"]


def test_sign_in_creates_the_user_with_groups_from_the_claim(sso, client, django_user_model):
    response, logged_in = sign_in(client)
    assert logged_in
    assert response.status_code == 302 and response["Location"] == "/"
    user = django_user_model.objects.get(username="carol")
    assert user.email == "carol@example.org" and user.first_name == "Carol"
    assert not user.has_usable_password()  # no local password: the provider vouches for it
    assert sorted(g.name for g in user.groups.all()) == ["research", "staff-readers"]
    assert client.get("/kb/").status_code == 200


def test_next_sign_in_finds_the_same_user_and_replaces_its_groups(sso, django_user_model):
    sign_in(Client())
    Group.objects.create(name="admins")
    sso.claims = {**sso.claims, "groups": ["admins"]}
    response, logged_in = sign_in(Client(), next_url="/kb/")
    assert logged_in and response["Location"] == "/kb/"
    assert django_user_model.objects.filter(username="carol").count() == 1
    user = django_user_model.objects.get(username="carol")
    assert [g.name for g in user.groups.all()] == ["admins"]
    assert Group.objects.filter(name="research").exists()  # groups are not deleted


def test_groups_are_left_alone_without_a_groups_claim_setting(sso, settings, django_user_model):
    settings.RAG_OIDC_GROUPS_CLAIM = ""
    _, logged_in = sign_in(Client())
    assert logged_in
    assert not django_user_model.objects.get(username="carol").groups.exists()


def test_id_token_signed_with_another_key_is_refused(sso, client, django_user_model):
    sso.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    response, logged_in = sign_in(client)
    assert not logged_in
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert not django_user_model.objects.filter(username="carol").exists()
    page = client.get("/accounts/login/").content.decode()
    assert "Single sign-on failed" in page


def test_id_token_for_another_client_is_refused(sso, client, django_user_model):
    sso.audience = "some-other-app"
    _, logged_in = sign_in(client)
    assert not logged_in
    assert not django_user_model.objects.filter(username="carol").exists()


def test_a_local_account_with_the_same_name_is_not_taken_over(sso, client, make_user):
    local = make_user("carol")
    _, logged_in = sign_in(client)
    assert not logged_in
    local.refresh_from_db()
    assert local.has_usable_password() and not local.groups.exists()


def test_local_password_login_still_works(sso, make_user):
    make_user("dave")
    client = Client()
    response = client.post("/accounts/login/", {"username": "dave", "password": "pw-Test-1234"})
    assert response.status_code == 302 and "_auth_user_id" in client.session


def test_without_configuration_there_is_no_button_and_no_oidc_urls(settings, client, db):
    settings.RAG_OIDC_ENABLED = False
    assert "Log in with" not in client.get("/accounts/login/").content.decode()
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404


def test_unreachable_provider_fails_gracefully(settings, client, db):
    settings.RAG_OIDC_ENABLED = True
    settings.RAG_OIDC_ISSUER = "http://127.0.0.1:9"  # discard port: nothing listens
    settings.RAG_OIDC_CLIENT_ID = CLIENT_ID
    settings.RAG_OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.RAG_OIDC_TIMEOUT = 2.0
    response = client.get("/oidc/authenticate/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"


def test_partial_configuration_names_the_missing_variables():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            **__import__("os").environ,
            "DJANGO_SETTINGS_MODULE": "ragapp.settings",
            "RAG_OIDC_ISSUER": "https://id.example.org",
            "RAG_OIDC_CLIENT_ID": "x",
            "RAG_OIDC_CLIENT_SECRET": "",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "RAG_OIDC_CLIENT_SECRET" in result.stderr


def test_groups_claim_accepts_a_single_name(db, make_user):
    user = make_user("erin")
    oidc.set_groups_from_claim(user=user, value="ops")
    assert [g.name for g in user.groups.all()] == ["ops"]
    oidc.set_groups_from_claim(user=user, value=None)
    assert not user.groups.exists()


def test_failed_sign_ins_count_towards_the_address_lockout(sso, settings, client):
    settings.AXES_FAILURE_LIMIT = 2
    sso.audience = "some-other-app"
    for _ in range(2):
        _, logged_in = sign_in(client)
        assert not logged_in
    sso.audience = CLIENT_ID
    response, logged_in = sign_in(client)
    assert not logged_in and response.status_code == 429
