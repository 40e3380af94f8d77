"""Who made a request, remembered for a few seconds.

A viewer sends hundreds of requests a second with the same bearer token or session cookie: remembering
credential → user briefly saves a query (and, in async code, a thread hop) per request. Revoking a token,
changing or deleting a user, and logging out clear the memory in this process (signals below); other
processes notice within ``RECENT_SECONDS``.
"""

import threading
import time

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .models import ApiToken

RECENT_SECONDS = 10.0
_users: dict[str, tuple[AbstractBaseUser, float]] = {}
_lock = threading.Lock()


def recent_user(credential: str) -> AbstractBaseUser | None:
    """The user remembered for ``credential`` (a key naming its kind, e.g. ``token:HASH``), or None."""
    with _lock:
        found = _users.get(credential)
    return found[0] if found is not None and found[1] > time.monotonic() else None


def remember_user(credential: str, user: AbstractBaseUser) -> None:
    with _lock:
        _users[credential] = (user, time.monotonic() + RECENT_SECONDS)


@receiver(post_save, sender=ApiToken)
@receiver(post_delete, sender=ApiToken)
@receiver(post_save, sender=settings.AUTH_USER_MODEL)
@receiver(post_delete, sender=settings.AUTH_USER_MODEL)
@receiver(user_logged_out)
def forget_recent_users(**kwargs: object) -> None:
    with _lock:
        _users.clear()
