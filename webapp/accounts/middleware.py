from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.module_loading import import_string

from .recent import recent_user, remember_user
from .tokens import bearer_from_header, cached_user_for_token, user_for_token

INVALID_TOKEN = "Invalid or revoked API token."


def invalid_token_response() -> JsonResponse:
    return JsonResponse({"detail": INVALID_TOKEN}, status=401)


def _accept_token_user(request: HttpRequest, user: AbstractBaseUser) -> None:
    request.user = user
    # A request that carries a token is not a browser form post, so CSRF checks do not apply to it.
    request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]


def _session_user(request: HttpRequest, session_key: str) -> AbstractBaseUser | AnonymousUser:
    """The user of a session cookie, for code that runs without the session and authentication middleware."""
    session_store: type[SessionBase] = import_string(settings.SESSION_ENGINE).SessionStore
    request.session = session_store(session_key)
    user = get_user(request)
    if user.is_authenticated:
        remember_user("session:" + session_key, user)  # type: ignore[arg-type]
    return user


async def authenticate_without_middleware(request: HttpRequest) -> HttpResponse | None:
    """Sets ``request.user`` from a bearer token or else the session cookie; a 401 response for an invalid
    token. For the endpoints that bypass Django's middleware (``webapp.studies.dicomweb.frame_server``): a
    credential seen in the last seconds costs no thread hop and no query."""
    raw = bearer_from_header(request.headers.get("Authorization"))
    if raw is None:
        session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        if not session_key:
            request.user = AnonymousUser()
            return None
        request.user = recent_user("session:" + session_key) or await sync_to_async(_session_user)(
            request, session_key
        )
        return None
    return await _authenticate_token(request, raw)


async def _authenticate_token(request: HttpRequest, raw: str) -> HttpResponse | None:
    """Sets ``request.user`` to the token's user, or returns the 401 response for an invalid token."""
    user = cached_user_for_token(raw) or await sync_to_async(user_for_token)(raw)
    if user is None:
        return invalid_token_response()
    _accept_token_user(request, user)
    return None


class BearerTokenMiddleware:
    """Authenticates ``Authorization: Bearer TOKEN`` for every view.

    A request with an invalid token gets 401 rather than silently falling back to anonymous access.
    Async-capable, so that async views are not pushed through a thread hop for every request.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        if self.is_async:
            return self._acall(request)
        raw = bearer_from_header(request.headers.get("Authorization"))
        if raw is not None:
            user = user_for_token(raw)
            if user is None:
                return invalid_token_response()
            _accept_token_user(request, user)
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        raw = bearer_from_header(request.headers.get("Authorization"))
        if raw is not None and (rejection := await _authenticate_token(request, raw)) is not None:
            return rejection
        return await self.get_response(request)  # type: ignore[misc]
