"""ASGI entry point: ``daphne webapp.asgi:application``."""

import os

import django
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
django.setup(set_prefix=False)  # as get_asgi_application() does: each request's root_path sets the prefix


class AnnovoxASGIHandler(ASGIHandler):
    # Django sends a response body in 64 KiB messages and the server handles each one separately: for a
    # 512 KiB frame or bulk-data response that was a quarter of the server's time. Streamed responses still
    # go out block by block.
    chunk_size = 4 * 1024 * 1024


from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (Django must be set up first)

from webapp.interactive.auth import WebSocketAuth  # noqa: E402
from webapp.interactive.routing import websocket_urlpatterns  # noqa: E402
from webapp.studies.dicomweb.frame_server import FrameServer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": FrameServer(AnnovoxASGIHandler()),
        "websocket": WebSocketAuth(URLRouter(websocket_urlpatterns)),
    }
)
