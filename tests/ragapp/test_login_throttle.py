"""Login throttling (django-axes): failed logins lock a username and a client address for a
cool-off, the lockout page says so, and staff can unlock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

PASSWORD = "pw-Test-1234"  # make_user's password
LIMIT = 3


@pytest.fixture(autouse=True)
def small_limit(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    settings.RAG_TRUSTED_PROXIES = 0


def log_in(username, password, *, address="10.0.0.9", **extra):
    """POST the real login page from a fresh browser; return (response, logged_in)."""
    client = Client()
    response = client.post(
        reverse("login"),
        {"username": username, "password": password},
        REMOTE_ADDR=address,
        **extra,
    )
    return response, "_auth_user_id" in client.session


def test_wrong_passwords_lock_the_username_even_with_the_right_password(make_user):
    make_user("alice")
    # From a different address each time, so only the per-username count can lock.
    for i in range(1, LIMIT):
        response, logged_in = log_in("alice", "wrong", address=f"10.0.1.{i}")
        assert response.status_code == 200 and not logged_in
    response, _ = log_in("alice", "wrong", address="10.0.1.99")
    assert response.status_code == 429

    response, logged_in = log_in("alice", PASSWORD, address="10.0.2.1")
    assert response.status_code == 429 and not logged_in
    page = response.content.decode()
    assert "Too many failed logins" in page
    assert f"after {LIMIT} failed attempts. Please try again in 15 minutes." in page
    assert "An administrator can lift the block sooner" in page


def test_one_address_is_locked_across_usernames(make_user):
    make_user("bob")
    for i in range(LIMIT):
        log_in(f"guess{i}", "wrong", address="10.0.0.9")

    response, logged_in = log_in("bob", PASSWORD, address="10.0.0.9")
    assert response.status_code == 429 and not logged_in
    # Bob himself, from his own machine, is not affected.
    response, logged_in = log_in("bob", PASSWORD, address="10.0.0.10")
    assert response.status_code == 302 and logged_in


def test_a_successful_login_clears_the_count(make_user):
    make_user("carol")
    for _ in range(LIMIT - 1):
        log_in("carol", "wrong")
    assert log_in("carol", PASSWORD)[1]
    for _ in range(LIMIT - 1):
        log_in("carol", "wrong")
    assert log_in("carol", PASSWORD)[1]


def test_staff_unlock_by_deleting_the_access_attempts_in_admin(make_user):
    make_user("alice")
    for _ in range(LIMIT):
        log_in("alice", "wrong")
    assert log_in("alice", PASSWORD, address="10.0.3.1")[0].status_code == 429

    admin = Client()
    admin.force_login(make_user("root", is_staff=True, is_superuser=True))
    assert reverse("admin:axes_accessattempt_changelist") in admin.get("/admin/").content.decode()
    listing = admin.get(reverse("admin:axes_accessattempt_changelist"))
    assert listing.status_code == 200 and "alice" in listing.content.decode()
    response = admin.post(
        reverse("admin:axes_accessattempt_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [a.pk for a in AccessAttempt.objects.filter(username="alice")],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not AccessAttempt.objects.filter(username="alice").exists()

    response, logged_in = log_in("alice", PASSWORD, address="10.0.3.1")
    assert response.status_code == 302 and logged_in


def test_axes_reset_username_command_unlocks(make_user):
    make_user("dave")
    for i in range(LIMIT):
        log_in("dave", "wrong", address=f"10.0.4.{i}")
    assert not log_in("dave", PASSWORD, address="10.0.4.9")[1]

    call_command("axes_reset_username", "dave")
    assert log_in("dave", PASSWORD, address="10.0.4.9")[1]


def test_login_works_again_after_the_cool_off(make_user):
    make_user("erin")
    for _ in range(LIMIT):
        log_in("erin", "wrong")
    assert log_in("erin", PASSWORD)[0].status_code == 429

    # Fifteen minutes and a second later (the last failure started the wait).
    past = AccessAttempt.objects.get(username="erin").attempt_time - timedelta(
        minutes=15, seconds=1
    )
    AccessAttempt.objects.filter(username="erin").update(attempt_time=past)
    response, logged_in = log_in("erin", PASSWORD)
    assert response.status_code == 302 and logged_in


def test_lockout_page_in_chinese(make_user):
    make_user("fang")
    for _ in range(LIMIT):
        log_in("fang", "wrong")
    response, _ = log_in("fang", PASSWORD, HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 429
    page = response.content.decode()
    assert "登录失败次数过多" in page
    assert f"登录失败 {LIMIT} 次后" in page and "请在 15 分钟后重试" in page
    assert "管理员可以提前解除限制" in page


def test_forwarded_for_is_ignored_unless_a_proxy_is_trusted(make_user):
    make_user("gina")
    # Clients connect directly: a made-up X-Forwarded-For must not buy fresh attempts.
    for i in range(LIMIT):
        log_in(f"guess{i}", "wrong", address="10.0.0.9", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")
    response, logged_in = log_in("gina", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.200")
    assert response.status_code == 429 and not logged_in


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_count(make_user, settings):
    settings.RAG_TRUSTED_PROXIES = 1
    make_user("hank")
    proxy = "172.18.0.2"
    # One client behind the proxy locks its own address; what it prepends to the header
    # itself is ignored (the proxy appends the address it saw).
    for i in range(LIMIT):
        log_in(
            f"guess{i}", "wrong", address=proxy, HTTP_X_FORWARDED_FOR=f"192.0.2.{i}, 198.51.100.7"
        )
    response, _ = log_in("hank", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert response.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.7"}
    # Everyone else behind the same proxy still logs in.
    response, logged_in = log_in(
        "hank", PASSWORD, address=proxy, HTTP_X_FORWARDED_FOR="198.51.100.8"
    )
    assert response.status_code == 302 and logged_in


def test_a_request_without_a_peer_address_is_still_counted(make_user):
    # Gunicorn on a unix socket passes REMOTE_ADDR="": the attempt is stored without one.
    make_user("ivan")
    for _ in range(LIMIT):
        response, _ = log_in("ivan", "wrong", address="")
    assert response.status_code == 429
    assert list(AccessAttempt.objects.values_list("ip_address", flat=True)) == [None]
