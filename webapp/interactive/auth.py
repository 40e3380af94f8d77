"""WebSocket authentication: ``Authorization: Bearer TOKEN`` (scripts, tools), else the session cookie."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser

from webapp.accounts.tokens import bearer_from_header, cached_user_for_token, user_for_token


class WebSocketAuth:
    """Sets ``scope["user"]`` and ``scope["auth"]``: "token" (a valid bearer token), "invalid-token" (a bad
    one, which never falls back to the cookie) or "session" (the cookie, through Channels' auth stack)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.session_stack = AuthMiddlewareStack(inner)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers", []))
        raw = bearer_from_header(headers.get(b"authorization", b"").decode("latin-1"))
        if raw is None:
            return await self.session_stack({**scope, "auth": "session"}, receive, send)
        user = cached_user_for_token(raw) or await database_sync_to_async(user_for_token)(raw)
        scope = {**scope, "user": user or AnonymousUser(), "auth": "token" if user else "invalid-token"}
        return await self.inner(scope, receive, send)
