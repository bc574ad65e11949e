"""The audit log: who did what, when and from where.

Changes (uploads, deletions, membership, settings, tokens) are recorded by an explicit
`audit_record(...)` at each place that makes them, inside the same transaction as the change:
if the change rolls back its record goes with it, and if the record cannot be written the
change fails too, so nothing is ever done without its record. Sign-ins, failed sign-ins and
sign-outs come from Django's auth signals; there is no change of ours to undo there, so a
failing record is logged instead of refusing the sign-in (a broken audit table must not lock
everyone out, staff included)."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

from django import forms
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.dispatch import receiver
from django.utils.translation import gettext_lazy as _

from ragapp.client_ip import client_ip
from ragapp.models import AuditEvent
from ragapp.validation import storable_text

logger = logging.getLogger(__name__)

USER_AGENT_LENGTH = AuditEvent._meta.get_field("user_agent").max_length

# The codes recorded, with the names the audit page shows. Order: as the filter lists them.
ACTIONS = {
    "login": _("Login"),
    "login_failed": _("Failed login"),
    "logout": _("Logout"),
    "document.upload": _("Document uploaded"),
    "document.delete": _("Document deleted"),
    "document.visibility": _("Document visibility changed"),
    "document.metadata": _("Document tags or metadata changed"),
    "document.approve": _("Document approved"),
    "document.reject": _("Document rejected"),
    "knowledge_base.delete": _("Knowledge base deleted"),
    "knowledge_base.settings": _("Knowledge base settings changed"),
    "member.add": _("Member added"),
    "member.change": _("Member role changed"),
    "member.remove": _("Member removed"),
    "group.create": _("Group created"),
    "group.member_add": _("User added to a group"),
    "group.member_remove": _("User removed from a group"),
    "token.create": _("API token created"),
    "token.revoke": _("API token revoked"),
    "faq.add": _("FAQ entry added"),
    "faq.change": _("FAQ entry changed"),
    "faq.delete": _("FAQ entry deleted"),
    "faq.import": _("FAQ entries imported"),
    "share_link.create": _("Share link created"),
    "share_link.revoke": _("Share link revoked"),
}


def audit_record(
    *,
    request=None,
    actor=None,
    action: str,
    obj=None,
    knowledge_base=None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event. `actor` defaults to the request's signed-in user; `obj` is any model
    instance (its type, id and str() are kept, not a link, so deleting it keeps the history);
    `knowledge_base` an instance or an id (taken from `obj.knowledge_base_id` if omitted)."""
    if actor is None and request is not None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            actor = user
    if knowledge_base is None and obj is not None:
        knowledge_base = getattr(obj, "knowledge_base_id", None)
    kb_id = getattr(knowledge_base, "pk", knowledge_base)
    event = AuditEvent(
        actor=actor,
        actor_name=actor.get_username() if actor is not None else "",
        action=action,
        knowledge_base_id=kb_id,
        details=_storable(details or {}),
    )
    if obj is not None:
        event.object_type = obj._meta.label_lower
        event.object_id = str(obj.pk or "")
        event.object_label = storable_text(str(obj))[:300]
    if request is not None:
        event.ip = client_ip(request)
        agent = storable_text(request.META.get("HTTP_USER_AGENT", ""))
        event.user_agent = agent[:USER_AGENT_LENGTH]
    with transaction.atomic():  # a savepoint: a failed insert leaves the caller's intact
        event.save()
    return event


def _storable(value):
    """`value` as jsonb accepts it: no NUL characters, no NaN or infinity (kept as text)."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {storable_text(str(k)): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def form_changes(form) -> dict[str, list]:
    """`{field: [old, new]}` for the fields a bound ModelForm changed (call before save())."""
    return {
        name: [form.initial.get(name), form.cleaned_data.get(name)] for name in form.changed_data
    }


def field_changes(before: dict[str, Any], instance) -> dict[str, list]:
    """`{field: [old, new]}` comparing `before` (field -> old value) with the instance now."""
    return {
        name: [old, getattr(instance, name)]
        for name, old in before.items()
        if getattr(instance, name) != old
    }


def audit_settings(*, request, knowledge_base, changes: dict[str, list]) -> None:
    """Record a knowledge base's changed settings (`{field: [old, new]}`), if any changed."""
    if changes:
        audit_record(
            request=request,
            action="knowledge_base.settings",
            obj=knowledge_base,
            knowledge_base=knowledge_base,
            details={"changed": changes},
        )


def audit_role_grant(*, request, knowledge_base, grantee, role: str) -> None:
    """Call inside the transaction, just before giving `grantee` (a user or a group) `role`
    on `knowledge_base`: records member.add, or member.change with the old and new role;
    nothing when the role stays the same."""
    if grantee._meta.label_lower == "auth.group":
        grants = knowledge_base.group_memberships.filter(group=grantee)
    else:
        grants = knowledge_base.memberships.filter(user=grantee)
    previous = grants.select_for_update().values_list("role", flat=True).first()
    if previous == role:
        return
    audit_record(
        request=request,
        action="member.add" if previous is None else "member.change",
        obj=grantee,
        knowledge_base=knowledge_base,
        details={"role": role} if previous is None else {"role": [previous, role]},
    )


def audit_grants_removed(*, request, knowledge_base, grants) -> None:
    """Call inside the transaction, just before deleting `grants` (memberships or group
    memberships of `knowledge_base`): records member.remove for each."""
    for grant in grants.select_for_update():
        audit_record(
            request=request,
            action="member.remove",
            obj=getattr(grant, "user", None) or grant.group,
            knowledge_base=knowledge_base,
            details={"role": grant.role},
        )


def grants_remove(*, request, knowledge_base, grants) -> int:
    """Take away `grants` (memberships or group memberships of `knowledge_base`), each
    recorded as member.remove in the same transaction; how many were removed. The one
    removal behind the members page and the API, for users and groups alike."""
    with transaction.atomic():
        audit_grants_removed(request=request, knowledge_base=knowledge_base, grants=grants)
        deleted, _ = grants.delete()
    return deleted


def _record_quietly(**kwargs) -> None:
    try:
        audit_record(**kwargs)
    except Exception:
        logger.exception("could not record the audit event %s", kwargs.get("action"))


@receiver(user_logged_in, dispatch_uid="ragapp.audit.logged_in")
def _logged_in(sender, request, user, **kwargs):
    _record_quietly(request=request, actor=user, action="login")


@receiver(user_logged_out, dispatch_uid="ragapp.audit.logged_out")
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        _record_quietly(request=request, actor=user, action="logout")


@receiver(user_login_failed, dispatch_uid="ragapp.audit.login_failed")
def _login_failed(sender, credentials, request=None, **kwargs):
    # Django has already masked the password in `credentials`; only the name tried is kept.
    username = str(credentials.get("username") or "")[:150]
    _record_quietly(request=request, action="login_failed", details={"username": username})


# --- reading -------------------------------------------------------------------------------


class AuditFilterForm(forms.Form):
    action = forms.ChoiceField(
        label=_("Action"), required=False, choices=[("", "—"), *ACTIONS.items()]
    )
    user = forms.CharField(label=_("User"), required=False, max_length=150)
    knowledge_base = forms.IntegerField(
        label=_("Knowledge base id"), required=False, min_value=1, max_value=2**63 - 1
    )
    date_from = forms.DateField(
        label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )


def audit_events(
    *,
    action: str = "",
    user: str = "",
    knowledge_base: int | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
):
    """Events, newest first, matching the filters (dates inclusive, in the site's time zone;
    `user` is the name the event kept, exact but case-insensitive)."""
    events = AuditEvent.objects.all()
    if action:
        events = events.filter(action=action)
    if user:
        events = events.filter(actor_name__iexact=user)
    if knowledge_base is not None:
        events = events.filter(knowledge_base_id=knowledge_base)
    if date_from is not None:
        events = events.filter(created_at__date__gte=date_from)
    if date_to is not None:
        events = events.filter(created_at__date__lte=date_to)
    return events


CSV_HEADER = [
    "time",
    "user",
    "action",
    "object_type",
    "object_id",
    "object",
    "knowledge_base_id",
    "ip",
    "user_agent",
    "details",
]


def csv_safe(value: Any) -> str:
    """A cell a spreadsheet shows as text: one starting like a formula gets a leading quote
    (OWASP's advice against CSV injection)."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


class _Echo:
    def write(self, value: str) -> str:
        return value


def audit_csv_rows(events: Iterable[AuditEvent]) -> Iterator[str]:
    """The CSV lines of `events`, one at a time, for a streamed response."""
    import json

    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    for e in events:
        yield writer.writerow(
            [
                csv_safe(v)
                for v in (
                    e.created_at.isoformat(),
                    e.actor_name,
                    e.action,
                    e.object_type,
                    e.object_id,
                    e.object_label,
                    e.knowledge_base_id,
                    e.ip,
                    e.user_agent,
                    json.dumps(e.details, ensure_ascii=False, default=str) if e.details else "",
                )
            ]
        )
