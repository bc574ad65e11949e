"""Single sign-on with OpenID Connect (mozilla-django-oidc), configured by RAG_OIDC_*.

Off unless RAG_OIDC_CLIENT_ID, RAG_OIDC_CLIENT_SECRET and an issuer (or the explicit
endpoints) are set; then the login page offers "Log in with <RAG_OIDC_NAME>" and /oidc/
serves the code flow. Everything is read from settings per request, so nothing here touches
the network at start-up (an unreachable provider must not stop local logins or the tests).

Who is who: an account signed in through the provider is named by the RAG_OIDC_USERNAME_CLAIM
claim (preferred_username, else email) and has no usable password. A later sign-in with the
same name matches only such an account: a local (password) account with that name is never
taken over, and local accounts are never linked by email. The provider is therefore trusted
to keep that claim unique and stable; where it is not, set RAG_OIDC_USERNAME_CLAIM=sub.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import jwt
import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import Group
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.views.generic import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

logger = logging.getLogger(__name__)


class ProviderUnavailable(Exception):
    """The provider's discovery document could not be read."""


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_endpoint: str
    scopes: str
    sign_algo: str
    username_claim: str
    groups_claim: str
    timeout: float


def oidc_config() -> OidcConfig | None:
    """The configured provider, or None when single sign-on is off."""
    if not getattr(settings, "RAG_OIDC_ENABLED", False):
        return None
    return OidcConfig(
        issuer=settings.RAG_OIDC_ISSUER.rstrip("/"),
        client_id=settings.RAG_OIDC_CLIENT_ID,
        client_secret=settings.RAG_OIDC_CLIENT_SECRET,
        authorization_endpoint=settings.RAG_OIDC_AUTHORIZATION_ENDPOINT,
        token_endpoint=settings.RAG_OIDC_TOKEN_ENDPOINT,
        userinfo_endpoint=settings.RAG_OIDC_USERINFO_ENDPOINT,
        jwks_endpoint=settings.RAG_OIDC_JWKS_ENDPOINT,
        scopes=settings.RAG_OIDC_SCOPES,
        sign_algo=settings.RAG_OIDC_SIGN_ALGO,
        username_claim=settings.RAG_OIDC_USERNAME_CLAIM,
        groups_claim=settings.RAG_OIDC_GROUPS_CLAIM,
        timeout=settings.RAG_OIDC_TIMEOUT,
    )


@functools.lru_cache(maxsize=8)
def _discovery(issuer: str, timeout: float) -> dict:
    # Cached per issuer for the life of the process; a failure is not cached (lru_cache keeps
    # no exceptions), so a provider that was down at the first sign-in is retried next time.
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=timeout)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"RAG_OIDC_ISSUER: could not read {url}: {exc}") from exc
    if document.get("issuer", "").rstrip("/") != issuer:
        raise ProviderUnavailable(
            f"RAG_OIDC_ISSUER is {issuer} but {url} names {document.get('issuer')!r}"
        )
    return document


def resolved(config: OidcConfig) -> OidcConfig:
    """The config with every endpoint filled in, from discovery where not set explicitly."""
    explicit = (
        config.authorization_endpoint,
        config.token_endpoint,
        config.jwks_endpoint,
    )
    if all(explicit) or not config.issuer:
        return config
    document = _discovery(config.issuer, config.timeout)
    return OidcConfig(
        **{
            **config.__dict__,
            "authorization_endpoint": config.authorization_endpoint
            or document.get("authorization_endpoint", ""),
            "token_endpoint": config.token_endpoint or document.get("token_endpoint", ""),
            "userinfo_endpoint": config.userinfo_endpoint or document.get("userinfo_endpoint", ""),
            "jwks_endpoint": config.jwks_endpoint or document.get("jwks_uri", ""),
        }
    )


def _library_settings(config: OidcConfig) -> dict:
    return {
        "OIDC_OP_AUTHORIZATION_ENDPOINT": config.authorization_endpoint,
        "OIDC_OP_TOKEN_ENDPOINT": config.token_endpoint,
        "OIDC_OP_USER_ENDPOINT": config.userinfo_endpoint,
        "OIDC_OP_JWKS_ENDPOINT": config.jwks_endpoint,
        "OIDC_RP_CLIENT_ID": config.client_id,
        "OIDC_RP_CLIENT_SECRET": config.client_secret,
        "OIDC_RP_SIGN_ALGO": config.sign_algo,
        "OIDC_RP_SCOPES": config.scopes,
        "OIDC_TIMEOUT": config.timeout,
    }


def login_context(request) -> dict:
    """Template context processor: the login page's single sign-on button, if any."""
    if not getattr(settings, "RAG_OIDC_ENABLED", False):
        return {"oidc_login_name": ""}
    return {"oidc_login_name": settings.RAG_OIDC_NAME or _("single sign-on")}


class OidcBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's code flow, with our account rules and full ID token checks.

    Django builds every backend for every authenticate() call, local password logins
    included, so the constructor reads nothing: a password login never triggers discovery.
    """

    def __init__(self, *args, **kwargs):
        from django.contrib.auth import get_user_model

        self.UserModel = get_user_model()
        self.config: OidcConfig | None = None

    def get_settings(self, attr, *args):
        if self.config is not None:
            values = _library_settings(self.config)
            if attr in values:
                return values[attr]
        return import_from_settings(attr, *args)

    def authenticate(self, request, **kwargs):
        if request is None or "code" not in request.GET or "state" not in request.GET:
            return None  # a password login, or not ours
        config = oidc_config()
        if config is None:
            return None
        try:
            self.config = resolved(config)
            for name, value in _library_settings(self.config).items():
                setattr(self, name, value)
            self.OIDC_RP_IDP_SIGN_KEY = None
            return super().authenticate(request, **kwargs)
        except (SuspiciousOperation, requests.RequestException, ProviderUnavailable) as exc:
            # A forged or stale token, or a provider error: no login, and the reason is logged.
            logger.warning("single sign-on refused: %s", exc)
            return None

    def get_payload_data(self, token, key):
        # The library checks the signature only; an ID token must also be for us (aud), from
        # our provider (iss) and current (exp), or a token minted for another app would do.
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[self.config.sign_algo],
                audience=self.config.client_id,
                issuer=self.config.issuer or None,
                options={"require": ["exp", "iat", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"ID token refused: {exc}") from exc

    def get_userinfo(self, access_token, id_token, payload):
        # The ID token's claims, completed (and overridden) by the userinfo endpoint's.
        claims = dict(payload)
        if self.config.userinfo_endpoint:
            userinfo = super().get_userinfo(access_token, id_token, payload)
            if userinfo.get("sub") != payload.get("sub"):
                raise SuspiciousOperation("userinfo sub differs from the ID token's")
            claims.update(userinfo)
        return claims

    def _username(self, claims) -> str:
        claim = self.config.username_claim
        value = claims.get(claim) or (claims.get("email") if claim == "preferred_username" else "")
        return str(value or "").strip()

    def verify_claims(self, claims):
        username = self._username(claims)
        return bool(username) and len(username) <= 150

    def filter_users_by_claims(self, claims):
        # Only accounts that sign in through the provider (no usable password) are matched;
        # Django keeps unusable passwords as "!" followed by random characters.
        return self.UserModel.objects.filter(
            username=self._username(claims), password__startswith="!"
        )

    @transaction.atomic
    def create_user(self, claims):
        username = self._username(claims)
        if self.UserModel.objects.filter(username=username).exists():
            raise SuspiciousOperation(f"a local account is named {username!r}; not taken over")
        user = self.UserModel(username=username)
        user.set_unusable_password()
        return self.update_user(user, claims)

    @transaction.atomic
    def update_user(self, user, claims):
        user.email = claims.get("email") or user.email
        user.first_name = (claims.get("given_name") or user.first_name)[:150]
        user.last_name = (claims.get("family_name") or user.last_name)[:150]
        user.save()
        if self.config.groups_claim:
            set_groups_from_claim(user=user, value=claims.get(self.config.groups_claim))
        return user


def set_groups_from_claim(*, user, value) -> None:
    """Make the user's groups exactly the claim's (by name, created if missing)."""
    if isinstance(value, str):
        names = [value]
    elif isinstance(value, list | tuple):
        names = [str(v) for v in value if str(v).strip()]
    else:
        names = []  # claim absent: the provider says "no groups"
    groups = [Group.objects.get_or_create(name=name[:150])[0] for name in dict.fromkeys(names)]
    user.groups.set(groups)


def _enabled_config_or_404() -> OidcConfig:
    config = oidc_config()
    if config is None:
        raise Http404("single sign-on is not configured")
    return config


def _failed(request):
    messages.error(request, _("Single sign-on failed. Please try again or ask an administrator."))
    return HttpResponseRedirect(reverse("login"))


class AuthenticationRequestView(OIDCAuthenticationRequestView):
    """/oidc/authenticate/: redirects to the provider (404 when single sign-on is off)."""

    def __init__(self, **kwargs):
        View.__init__(self, **kwargs)  # the library's reads settings we resolve per request
        self.config: OidcConfig | None = None

    def get_settings(self, attr, *args):
        if self.config is not None:
            values = _library_settings(self.config)
            if attr in values:
                return values[attr]
        return import_from_settings(attr, *args)

    def get(self, request):
        config = _enabled_config_or_404()
        try:
            self.config = resolved(config)
        except ProviderUnavailable as exc:
            logger.error("single sign-on unavailable: %s", exc)
            return _failed(request)
        self.OIDC_OP_AUTH_ENDPOINT = self.config.authorization_endpoint
        self.OIDC_RP_CLIENT_ID = self.config.client_id
        return super().get(request)


class CallbackView(OIDCAuthenticationCallbackView):
    """/oidc/callback/: the provider sends the browser back here with a code."""

    def get(self, request):
        _enabled_config_or_404()
        return super().get(request)

    def login_failure(self):
        return _failed(self.request)


urlpatterns = [
    path("callback/", CallbackView.as_view(), name="oidc_authentication_callback"),
    path("authenticate/", AuthenticationRequestView.as_view(), name="oidc_authentication_init"),
]
