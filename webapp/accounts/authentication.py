from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from .middleware import INVALID_TOKEN
from .tokens import bearer_from_header, user_for_token


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """DRF side of the same bearer tokens the middleware accepts."""

    def authenticate(self, request: Request):  # type: ignore[no-untyped-def]
        raw = bearer_from_header(request.headers.get("Authorization"))
        if raw is None:
            return None
        user = user_for_token(raw)
        if user is None:
            raise exceptions.AuthenticationFailed(INVALID_TOKEN)
        return (user, raw)

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Describes the bearer tokens in the OpenAPI schema."""

    target_class = "webapp.accounts.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {"type": "http", "scheme": "bearer", "description": "A token from `manage.py issue_token`."}
