from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from .tokens import bearer_from_header, user_for_token


class BearerTokenMiddleware:
    """Authenticates ``Authorization: Bearer TOKEN`` for every view.

    A request that carries a token is not a browser form post, so CSRF checks do not apply to it. A request
    with an invalid token gets 401 rather than silently falling back to anonymous access.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw = bearer_from_header(request.headers.get("Authorization"))
        if raw is not None:
            user = user_for_token(raw)
            if user is None:
                return JsonResponse({"detail": "Invalid or revoked API token."}, status=401)
            request.user = user
            request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
        return self.get_response(request)
