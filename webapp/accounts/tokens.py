"""Bearer-token authentication shared by plain views, DRF and (later) the WebSocket."""

import threading
import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from .models import ApiToken, hash_token


def bearer_from_header(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


# A viewer sends hundreds of requests a second with the same token: remember token → user briefly instead of
# querying for each. Revoking a token or changing its user clears the entry in this process (signals below);
# other processes notice within TOKEN_CACHE_SECONDS.
TOKEN_CACHE_SECONDS = 10.0
_cache: dict[str, tuple[AbstractBaseUser, float]] = {}
_cache_lock = threading.Lock()


def forget_cached_tokens() -> None:
    with _cache_lock:
        _cache.clear()


def user_for_token(raw: str) -> AbstractBaseUser | None:
    """The active user owning ``raw``, or None for an unknown, revoked or inactive token."""
    token_hash = hash_token(raw)
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(token_hash)
    if cached is not None and cached[1] > now:
        return cached[0]
    token = ApiToken.objects.select_related("user").filter(token_hash=token_hash, revoked=False).first()
    if token is None or not token.user.is_active:
        return None
    moment = timezone.now()
    # Write last_used at most once a minute.
    if token.last_used is None or moment - token.last_used > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used=moment)
    with _cache_lock:
        _cache[token_hash] = (token.user, now + TOKEN_CACHE_SECONDS)
    return token.user


@receiver(post_save, sender=ApiToken)
@receiver(post_delete, sender=ApiToken)
@receiver(post_save, sender=settings.AUTH_USER_MODEL)
@receiver(post_delete, sender=settings.AUTH_USER_MODEL)
def _forget_on_change(**kwargs: object) -> None:
    forget_cached_tokens()
