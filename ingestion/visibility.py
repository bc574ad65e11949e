"""Who may see a restricted document: the `visible_to` value of the upload form, the API
and the document page, checked against the knowledge base's members in one place."""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from ingestion.services import DocumentVisibility


class InvalidVisibility(ValueError):
    """A `visible_to` value that names no members or has the wrong shape; user-facing."""


def _names(value, key: str) -> list[str]:
    names = value.get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidVisibility(f"visible_to.{key}: a list of names expected")
    return list(dict.fromkeys(n.strip() for n in names if n.strip()))


def visibility_from(*, knowledge_base, value) -> DocumentVisibility | None:
    """{"users": [usernames], "groups": [group names]} (or its JSON text) as a
    DocumentVisibility; None (or "") lifts the restriction. Every user must hold a role in
    the knowledge base (their own or through a group) and every group a grant in it:
    restricting to someone who cannot read the knowledge base would show them nothing."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidVisibility("visible_to: not valid JSON") from exc
        if value is None:
            return None
    if not isinstance(value, dict) or set(value) - {"users", "groups"}:
        raise InvalidVisibility('visible_to: an object {"users": [...], "groups": [...]} expected')
    usernames, group_names = _names(value, "users"), _names(value, "groups")
    users = list(get_user_model().objects.filter(username__in=usernames))
    outsiders = set(usernames) - {u.username for u in users}
    outsiders |= {u.username for u in users if knowledge_base.role_of(u) is None}
    if outsiders:
        raise InvalidVisibility(
            "visible_to.users: not members of this knowledge base: " + ", ".join(sorted(outsiders))
        )
    groups = list(
        Group.objects.filter(name__in=group_names, kb_memberships__knowledge_base=knowledge_base)
    )
    missing = set(group_names) - {g.name for g in groups}
    if missing:
        raise InvalidVisibility(
            "visible_to.groups: groups without a role in this knowledge base: "
            + ", ".join(sorted(missing))
        )
    return DocumentVisibility(users=tuple(users), groups=tuple(groups))


def visibility_out(document) -> dict | None:
    """The document's `visible_to` as the API returns it; None when it is not restricted."""
    if not document.restricted:
        return None
    return {
        "users": sorted(document.visible_to_users.values_list("username", flat=True)),
        "groups": sorted(document.visible_to_groups.values_list("name", flat=True)),
    }
