"""WADO-RS frames without Django's request handler.

A viewer fetches one frame per request, hundreds per second. Django's ASGI request handling (a new thread
for each request's thread-sensitive work, the request signals, the middleware chain) cost about 4.5 ms of
server CPU per frame against 0.5 ms for finding and reading the frame, and held frame throughput to half of
Orthanc's (docs/benchmarks.md). So same-origin GET requests for frames go straight to the frames view:
authenticated here (bearer token or session cookie, each remembered for a few seconds) and answered in one
message. Everything else goes to Django as usual: other paths and methods, and cross-origin requests, which
CorsMiddleware answers. The view, its errors and its authentication rules are the same either way.

Without a per-request thread context, the view's database work runs in asgiref's one shared sync thread.
Frame lookups take a fraction of a millisecond, so sharing that thread costs nothing. Each request ends with
Django's ``request_finished`` signal, which recycles that thread's database connection as Django's handler
would.
"""

from __future__ import annotations

import io
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.core.signals import request_finished
from django.http import HttpResponse
from django.urls import Resolver404, resolve, set_script_prefix

from webapp.accounts.middleware import authenticate_without_middleware

Scope = dict[str, Any]


def _is_frames_request(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "GET" or "/frames/" not in scope["path"]:
        return False
    return not any(name == b"origin" for name, _ in scope["headers"])


class FrameServer:
    """ASGI application: frames requests as described above, everything else to ``django_app``."""

    def __init__(self, django_app: Any) -> None:
        self.django_app = django_app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if not _is_frames_request(scope):
            await self.django_app(scope, receive, send)
            return
        set_script_prefix(settings.FORCE_SCRIPT_NAME or scope.get("root_path", "") or "/")
        request = ASGIRequest(scope, io.BytesIO())
        try:
            match = resolve(request.path_info)
        except Resolver404:
            await self.django_app(scope, receive, send)
            return
        if match.view_name != "dicomweb:frames":
            await self.django_app(scope, receive, send)
            return
        try:
            response = await authenticate_without_middleware(request)
            if response is None:
                request.resolver_match = match
                response = await match.func(request, *match.args, **match.kwargs)
            await _send(response, send)
        finally:
            await request_finished.asend(sender=self.__class__)


async def _send(response: HttpResponse, send: Any) -> None:
    body = response.content
    response.headers["Content-Length"] = str(len(body))
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
