from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse

from .tokens import bearer_from_header, user_for_token


class BearerTokenMiddleware:
    """Authenticates ``Authorization: Bearer TOKEN`` for every view.

    A request that carries a token is not a browser form post, so CSRF checks do not apply to it. A request
    with an invalid token gets 401 rather than silently falling back to anonymous access. Async-capable, so
    that async views (DICOMweb) are not pushed through a thread hop for every request.
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
            rejection = self._authenticate(request, user_for_token(raw))
            if rejection:
                return rejection
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        raw = bearer_from_header(request.headers.get("Authorization"))
        if raw is not None:
            rejection = self._authenticate(request, await sync_to_async(user_for_token)(raw))
            if rejection:
                return rejection
        return await self.get_response(request)  # type: ignore[misc]

    @staticmethod
    def _authenticate(request: HttpRequest, user) -> JsonResponse | None:  # type: ignore[no-untyped-def]
        if user is None:
            return JsonResponse({"detail": "Invalid or revoked API token."}, status=401)
        request.user = user
        request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
        return None
