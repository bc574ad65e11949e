"""Forms of the project's own pages (accounts)."""

from __future__ import annotations

from django.contrib.auth.forms import UserCreationForm

from ragapp.models import User


class SignUpForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username",)
