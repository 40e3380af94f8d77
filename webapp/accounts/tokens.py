"""Bearer-token authentication shared by plain views, DRF and (later) the WebSocket."""

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from .models import ApiToken, hash_token
from .recent import recent_user, remember_user


def bearer_from_header(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _credential(raw: str) -> str:
    return "token:" + hash_token(raw)


def cached_user_for_token(raw: str) -> AbstractBaseUser | None:
    """The user of ``raw`` if it was looked up in the last seconds, without touching the database (async code
    calls this directly and goes to a thread for :func:`user_for_token` only on a miss)."""
    return recent_user(_credential(raw))


def user_for_token(raw: str) -> AbstractBaseUser | None:
    """The active user owning ``raw``, or None for an unknown, revoked or inactive token."""
    if (user := cached_user_for_token(raw)) is not None:
        return user
    token = ApiToken.objects.select_related("user").filter(token_hash=hash_token(raw), revoked=False).first()
    if token is None or not token.user.is_active:
        return None
    moment = timezone.now()
    # Write last_used at most once a minute.
    if token.last_used is None or moment - token.last_used > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used=moment)
    remember_user(_credential(raw), token.user)
    return token.user
