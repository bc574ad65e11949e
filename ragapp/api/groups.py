"""Groups of users (django.contrib.auth groups), which staff manage; a knowledge base's
owners then give a whole group a role through /knowledge-bases/{id}/members.

Only staff tokens may use these endpoints; any other token gets 403 before any group is
looked up, so the answer says nothing about which groups exist."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from ninja import Router, Status
from ninja.errors import HttpError

from ragapp.api.schemas import GroupIn, GroupMemberIn, GroupMemberOut, GroupOut
from ragapp.audit import audit_record

router = Router(tags=["groups"])


def _staff_only(request) -> None:
    if not request.user.is_staff:
        raise PermissionDenied("Only staff can manage groups.")


def _group_get(group_id: int) -> Group:
    group = Group.objects.filter(pk=group_id).first()
    if group is None:
        raise HttpError(404, "no such group")
    return group


@router.post("/groups", response={201: GroupOut})
def create_group(request, payload: GroupIn):
    _staff_only(request)
    try:
        with transaction.atomic():
            group = Group.objects.create(name=payload.name)
            audit_record(request=request, action="group.create", obj=group)
    except IntegrityError:
        raise HttpError(409, f"a group named {payload.name!r} exists") from None
    return Status(201, {"id": group.pk, "name": group.name})


@router.post("/groups/{int:group_id}/members", response={201: GroupMemberOut})
def add_group_member(request, group_id: int, payload: GroupMemberIn):
    _staff_only(request)
    group = _group_get(group_id)
    user = get_user_model().objects.filter(username=payload.username, is_active=True).first()
    if user is None:
        raise HttpError(400, f"no user named {payload.username!r}")
    with transaction.atomic():  # no membership change without its audit record
        user.groups.add(group)
        audit_record(
            request=request, action="group.member_add", obj=group, details={"user": user.username}
        )
    return Status(201, {"group": group.name, "username": user.username})


@router.delete("/groups/{int:group_id}/members/{username}", response={204: None})
def remove_group_member(request, group_id: int, username: str):
    """The user loses the group's roles on their next request (nothing is cached)."""
    _staff_only(request)
    group = _group_get(group_id)
    if "\x00" in username:  # PostgreSQL text cannot hold it: no such user
        raise HttpError(404, "no such member")
    user = get_user_model().objects.filter(username=username, groups=group).first()
    if user is None:
        raise HttpError(404, "no such member")
    with transaction.atomic():
        user.groups.remove(group)
        audit_record(
            request=request,
            action="group.member_remove",
            obj=group,
            details={"user": user.username},
        )
    return Status(204, None)
