"""Accounts: API tokens from the command line, the first administrator, and the login page."""

import io
import re

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from tests.conftest import study_reader
from webapp.accounts.models import ApiToken

pytestmark = pytest.mark.django_db

User = get_user_model()


def command_output(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def user():
    return study_reader("reader", password="a long test password")


def test_issue_token_prints_a_token_that_the_api_accepts(user):
    token = command_output("issue_token", "reader").strip()

    assert re.fullmatch(r"avx_[A-Za-z0-9_-]{40,}", token)
    me = Client().get("/api/me/", HTTP_AUTHORIZATION=f"Bearer {token}")
    studies = Client().get("/api/studies/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert me.status_code == 200
    assert me.json()["username"] == "reader"
    assert studies.status_code == 200
    # Only a hash is kept.
    stored = ApiToken.objects.get(user=user)
    assert token not in {stored.token_hash, stored.prefix}
    assert stored.last_used is not None


def test_wrong_and_revoked_tokens_get_401(user):
    token = command_output("issue_token", "reader").strip()
    wrong = Client().get("/api/studies/", HTTP_AUTHORIZATION=f"Bearer {token}x")
    assert wrong.status_code == 401

    ApiToken.objects.filter(user=user).update(revoked=True)
    revoked = Client().get("/api/studies/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert revoked.status_code == 401
    assert revoked.json() == {"detail": "Invalid or revoked API token."}


def test_token_of_a_deactivated_user_gets_401(user):
    token = command_output("issue_token", "reader").strip()
    user.is_active = False
    user.save()
    assert Client().get("/api/studies/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_issue_token_for_an_unknown_user_fails():
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        call_command("issue_token", "nobody")
    assert not ApiToken.objects.exists()


def test_ensure_admin_uses_the_password_from_the_environment_once(monkeypatch):
    monkeypatch.setenv("ANNOVOX_ADMIN_PASSWORD", "correct horse battery staple")
    monkeypatch.delenv("ANNOVOX_ADMIN_USER", raising=False)

    first = command_output("ensure_admin")
    second = command_output("ensure_admin")

    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password("correct horse battery staple")
    assert "correct horse battery staple" not in first
    assert "admin" in first
    assert second == ""
    assert User.objects.count() == 1


def test_ensure_admin_generates_a_password_and_prints_it_once(monkeypatch):
    monkeypatch.delenv("ANNOVOX_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("ANNOVOX_ADMIN_USER", raising=False)

    first = command_output("ensure_admin")
    second = command_output("ensure_admin")

    password = re.search(r"password: (\S+)", first).group(1)
    admin = User.objects.get(username="admin")
    assert len(password) >= 12
    assert admin.check_password(password)
    assert second == ""
    assert User.objects.filter(is_superuser=True).count() == 1
    assert admin.check_password(password)  # the second call changed nothing


def test_anonymous_visitors_are_sent_to_the_login_page():
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_login_page_signs_in_and_out(user):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/accounts/login/?next=/")
    assert page.status_code == 200
    assert b'name="username"' in page.content and b'name="password"' in page.content
    csrf = client.cookies["csrftoken"].value

    wrong = client.post(
        "/accounts/login/", {"username": "reader", "password": "nope", "csrfmiddlewaretoken": csrf}
    )
    assert wrong.status_code == 200
    assert b"did not match" in wrong.content

    right = client.post(
        "/accounts/login/",
        {"username": "reader", "password": "a long test password", "next": "/", "csrfmiddlewaretoken": csrf},
    )
    assert right.status_code == 302
    assert right["Location"] == "/"
    home = client.get("/")
    if (settings.BASE_DIR / "frontend" / "dist" / "index.html").exists():
        assert home.status_code == 200
        assert b'src="/static/assets/' in home.content  # the page Vite built
    else:
        assert home.status_code == 503  # signed in, but the frontend was not built
    assert client.get("/api/me/").json()["username"] == "reader"

    # The page signs out with a small POST form, as Django 5 requires.
    csrf = client.cookies["csrftoken"].value
    out = client.post("/accounts/logout/", {"next": "/accounts/login/", "csrfmiddlewaretoken": csrf})
    assert out.status_code == 302
    assert out["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302
    assert client.get("/api/me/").status_code == 401


def test_revoking_a_recently_used_token_takes_effect_at_once(user):
    """Tokens are cached briefly; revoking one (as the admin does, by saving it) clears the cache."""
    token = command_output("issue_token", "reader").strip()
    client = Client()
    assert client.get("/api/studies/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    stored = ApiToken.objects.get(user=user)
    stored.revoked = True
    stored.save()
    assert client.get("/api/studies/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
