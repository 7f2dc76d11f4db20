"""Accounts: the sign-in rate limit (django-axes) and the first run, raced."""

import threading
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.db.models import F
from django.test import Client

pytestmark = pytest.mark.django_db

WRONG = "not-the-password"
RIGHT = "a-long-password-1"  # the `user` fixture's


def sign_in(client, username, password, address="203.0.113.7"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_wrong_passwords_for_one_account_pause_its_sign_in_from_any_address(client, user, settings):
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, "ana", WRONG, f"203.0.113.{n}").status_code == 200
    locked = sign_in(client, "ana", WRONG, "198.51.100.1")
    assert locked.status_code == 429
    text = locked.content.decode()
    assert "Too many wrong passwords for this account or from this address" in text
    assert "try again in 15 minutes" in text and 'name="username"' in text
    # Even the right password, from yet another address, waits.
    assert sign_in(client, "ana", RIGHT, "192.0.2.200").status_code == 429
    assert "_auth_user_id" not in client.session


def test_wrong_passwords_from_one_address_pause_sign_in_there_for_every_account(
    client, user, other_user, settings
):
    for n in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, f"guess-{n}", WRONG)
    assert sign_in(client, "ben", "a-long-password-2").status_code == 429
    # Another address is not affected.
    response = sign_in(Client(), "ben", "a-long-password-2", "198.51.100.9")
    assert response.status_code == 302


def test_the_pause_ends_by_itself(client, user, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "ana", WRONG)
    assert sign_in(client, "ana", RIGHT).status_code == 429
    # The cool-off passes (the attempts are as old as it is long).
    AccessAttempt.objects.update(
        attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    response = sign_in(client, "ana", RIGHT)
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(user.pk)


def test_a_right_password_clears_the_count(client, user, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "ana", WRONG)
    assert sign_in(client, "ana", RIGHT).status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "ana", WRONG)
    assert sign_in(client, "ana", RIGHT).status_code == 302


def test_force_login_still_signs_the_test_client_in(client, user):
    client.force_login(user)
    assert client.get("/").status_code == 200


# --- First run ------------------------------------------------------------------------------


def first_account(client, username):
    password = "fox-in-the-snow-42"
    return client.post("/setup/", {"username": username, "password1": password, "password2": password})


def test_two_first_accounts_posted_at_once_make_one_admin(client, monkeypatch):
    """Both posts saw a studio with no user (as simultaneous posts do): the row only one
    transaction can insert decides, whatever the database's isolation."""
    monkeypatch.setattr("studio.views._no_users", lambda: True)
    assert first_account(client, "ana").url == "/"
    loser = Client()
    response = first_account(loser, "mallory")
    assert response.status_code == 302 and response.url == "/accounts/login/"
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["ana"]
    assert "_auth_user_id" not in loser.session


def test_with_the_first_account_deleted_the_first_run_opens_again(client):
    first_account(client, "ana")
    get_user_model().objects.all().delete()
    assert first_account(Client(), "ben").url == "/"
    assert get_user_model().objects.get().username == "ben"


@pytest.mark.django_db(transaction=True)
def test_ten_simultaneous_first_accounts_make_exactly_one_admin(monkeypatch):
    """Ten threads, each past the "no user yet" check before any of them saves (a barrier
    holds them there), then all saving at once. Needs a database where threads really run
    side by side: PostgreSQL (tests/test_scaleout.py runs this file there)."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite's shared in-memory test database locks whole tables")
    from studio import views

    seen_empty = threading.Barrier(10, timeout=20)
    original = views._no_users

    def no_users_then_wait():
        empty = original()
        seen_empty.wait()
        return empty

    monkeypatch.setattr(views, "_no_users", no_users_then_wait)
    answers = []

    def post(n):
        try:
            answers.append(first_account(Client(), f"admin{n}").url)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(answers) == ["/"] + ["/accounts/login/"] * 9
    assert get_user_model().objects.count() == 1
    assert get_user_model().objects.get().is_superuser
