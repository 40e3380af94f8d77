"""Bearer-token authentication shared by plain views, DRF and (later) the WebSocket."""

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from .models import ApiToken, hash_token


def bearer_from_header(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def user_for_token(raw: str) -> AbstractBaseUser | None:
    """The active user owning ``raw``, or None for an unknown, revoked or inactive token."""
    token = ApiToken.objects.select_related("user").filter(token_hash=hash_token(raw), revoked=False).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    # Write last_used at most once a minute: a viewer sends hundreds of requests per second.
    if token.last_used is None or now - token.last_used > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used=now)
    return token.user
