"""Forms of the project's own pages (accounts)."""

from __future__ import annotations

import hashlib

from django import forms
from django.conf import settings
from django.contrib.auth.forms import PasswordResetForm, UserCreationForm
from django.utils.translation import gettext_lazy as _

from ragapp.models import User
from ragapp.ratelimit import count_hit


class SignUpForm(UserCreationForm):
    email = forms.EmailField(
        label=_("Email (optional)"),
        required=False,
        help_text=_("Only used to send you a link if you forget your password."),
    )

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


class ThrottledPasswordResetForm(PasswordResetForm):
    """At most RAG_PASSWORD_RESET_PER_HOUR reset emails to one address an hour, so the form
    cannot be used to flood someone's inbox. Past the limit nothing is sent and the page
    looks the same as always (it never tells whether an address has an account)."""

    def get_users(self, email):
        digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
        sent = count_hit(f"password-reset:{digest}", timeout=3600)
        if sent > settings.RAG_PASSWORD_RESET_PER_HOUR:
            return iter(())
        return super().get_users(email)
