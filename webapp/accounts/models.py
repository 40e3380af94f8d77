import hashlib
import secrets

from django.conf import settings
from django.db import models


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenManager(models.Manager["ApiToken"]):
    def issue(self, user: settings.AUTH_USER_MODEL, name: str = "") -> str:  # type: ignore[valid-type]
        """Create a token for ``user`` and return its secret; only the hash is stored."""
        raw = "avx_" + secrets.token_urlsafe(32)
        self.create(user=user, name=name, token_hash=hash_token(raw), prefix=raw[:10])
        return raw


class ApiToken(models.Model):
    """A bearer token for scripts and DICOMweb clients (``Authorization: Bearer TOKEN``)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=10, help_text="First characters, to recognise a token in lists.")
    token_hash = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    objects = ApiTokenManager()

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"
