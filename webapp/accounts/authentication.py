from rest_framework import authentication, exceptions
from rest_framework.request import Request

from .tokens import bearer_from_header, user_for_token


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """DRF side of the same bearer tokens the middleware accepts."""

    def authenticate(self, request: Request):  # type: ignore[no-untyped-def]
        raw = bearer_from_header(request.headers.get("Authorization"))
        if raw is None:
            return None
        user = user_for_token(raw)
        if user is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API token.")
        return (user, raw)

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"
