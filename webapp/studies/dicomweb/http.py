"""HTTP plumbing shared by the DICOMweb views: errors, authentication, content negotiation and multipart."""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.functional import LazyObject
from django.views.decorators.csrf import csrf_exempt

from ..access import VIEW_PERMISSION, can_view_studies

DICOM_JSON = "application/dicom+json"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class DicomWebError(Exception):
    """A request that cannot be answered; ``str(exc)`` is the message the client reads."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def response(self) -> HttpResponse:
        return error_response(self.status, str(self))


def bad_request(message: str) -> DicomWebError:
    return DicomWebError(400, message)


def not_found(message: str) -> DicomWebError:
    return DicomWebError(404, message)


def not_acceptable(message: str) -> DicomWebError:
    return DicomWebError(406, message)


def error_response(status: int, message: str) -> HttpResponse:
    return JsonResponse({"detail": message}, status=status)


def dicom_json_response(body: bytes | Any, status: int = 200, warnings: Iterable[str] = ()) -> HttpResponse:
    """A DICOM JSON answer; ``body`` is either serialised already or a JSON-able value."""
    if not isinstance(body, bytes):
        body = json.dumps(body, separators=(",", ":")).encode()
    response = HttpResponse(body, status=status, content_type=DICOM_JSON)
    if warnings:
        # RFC 7234 warnings: code, agent, quoted text (PS3.18 uses 299 for ignored query keys).
        response.headers["Warning"] = ", ".join(f'299 annovox "{text}"' for text in warnings)
    return response


# --- content negotiation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaRange:
    """One Accept entry, e.g. ``multipart/related; type="application/dicom"; transfer-syntax=*``."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def part_type(self) -> str:
        """The media type of the parts of a multipart range (``*/*`` when not given); else the type itself."""
        if self.media_type in ("multipart/related", "multipart/*"):
            return self.params.get("type", "*/*").lower()
        return self.media_type

    @property
    def multipart(self) -> bool:
        return self.media_type in ("multipart/related", "multipart/*", "*/*")

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def split_unquoted(text: str, separator: str) -> list[str]:
    """Split at ``separator`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` in lower case and the parameters (names lower case, values unquoted)."""
    media_type, *raw_params = split_unquoted(value, ";")
    params = {}
    for raw in raw_params:
        name, _, param = raw.partition("=")
        if name.strip():
            params[name.strip().lower()] = param.strip().strip('"')
    return media_type.strip().lower(), params


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, most preferred first; no header means ``*/*``."""
    ranges = []
    for entry in split_unquoted(header or "*/*", ","):
        if not entry.strip():
            continue
        media_type, params = parse_media_type(entry)
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append(MediaRange(media_type, params, q))
    ranges.sort(key=lambda r: -r.q)  # stable: equal weights keep the client's order
    return ranges


def accepts_json(header: str | None) -> bool:
    """Whether DICOM JSON is acceptable (QIDO-RS and metadata)."""
    acceptable = {DICOM_JSON, "application/json", "application/*", "*/*"}
    return any(r.media_type in acceptable for r in parse_accept(header))


def require_json(request: HttpRequest) -> None:
    if not accepts_json(request.headers.get("Accept")):
        raise not_acceptable(f"only {DICOM_JSON} is available here (XML is not supported)")


# --- multipart/related -------------------------------------------------------------------------------------


def new_boundary() -> str:
    return f"annovox-{secrets.token_hex(12)}"


def multipart_type(part_type: str, boundary: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def part_head(boundary: str, content_type: str, first: bool = False) -> bytes:
    # Parts are separated by CRLF--boundary; the CRLF belongs to the delimiter, not to the previous body.
    lead = "" if first else "\r\n"
    return f"{lead}--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()


def part_tail(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode()


def multipart_body(boundary: str, parts: Iterable[tuple[str, bytes]]) -> bytes:
    chunks = []
    for index, (content_type, data) in enumerate(parts):
        chunks += [part_head(boundary, content_type, first=index == 0), data]
    chunks.append(part_tail(boundary))
    return b"".join(chunks)


def multipart_response(part_type: str, parts: list[tuple[str, bytes]]) -> HttpResponse:
    boundary = new_boundary()
    return HttpResponse(multipart_body(boundary, parts), content_type=multipart_type(part_type, boundary))


# --- authentication and dispatch ---------------------------------------------------------------------------

Handler = Callable[..., Awaitable[HttpResponse]]


async def _user(request: HttpRequest) -> Any:
    user = request.user
    if isinstance(user, LazyObject):
        # The session user is loaded lazily and would query the database from the event loop; a bearer
        # token has already replaced it with a real user in the middleware.
        user = await request.auser()
    return user


async def _may_read(user: Any) -> bool:
    if user.is_active and user.is_superuser:
        return True  # no permission query (nor thread hop) for the common case of the embedded default
    return await sync_to_async(can_view_studies)(user)


def forbidden() -> HttpResponse:
    return error_response(403, f"This account may not see the study database (permission {VIEW_PERMISSION}).")


def unauthorized() -> HttpResponse:
    response = error_response(401, "Authentication required: log in, or send 'Authorization: Bearer TOKEN'.")
    response.headers["WWW-Authenticate"] = 'Bearer realm="annovox"'
    return response


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    """Browser sessions still need a CSRF token for STOW-RS; bearer-token requests are exempt.

    The view itself is exempt so that an anonymous API client gets 401 rather than a CSRF 403.
    """
    if request.method in SAFE_METHODS or getattr(request, "_dont_enforce_csrf_checks", False):
        return None
    return CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})  # type: ignore[arg-type]


def endpoint(**handlers: Handler) -> Callable[..., Awaitable[HttpResponse]]:
    """An async view answering the given methods (``GET=…, POST=…``) to authenticated users only."""
    allowed = ", ".join(sorted(handlers))

    @csrf_exempt
    async def view(request: HttpRequest, **kwargs: str) -> HttpResponse:
        handler = handlers.get(request.method or "")
        if handler is None:
            response = error_response(405, f"{request.method} is not supported here; allowed: {allowed}")
            response.headers["Allow"] = allowed
            return response
        user = await _user(request)
        if not user.is_authenticated:
            return unauthorized()
        if not await _may_read(user):
            return forbidden()
        if (failure := _csrf_failure(request)) is not None:
            return failure
        try:
            return await handler(request, **kwargs)
        except DicomWebError as exc:
            return exc.response()

    return view
