"""The settings pick the services from the environment, and the chosen ones work for real."""

import os
import socket
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.db import connection

from tests.conftest import require


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_database_follows_database_url():
    url = os.environ.get("DATABASE_URL", "")
    engine = settings.DATABASES["default"]["ENGINE"]
    if url.startswith("postgres"):
        assert engine == "django.db.backends.postgresql"
    else:
        assert engine == "django.db.backends.sqlite3"


@pytest.mark.django_db
def test_database_round_trip():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 + 1")
        assert cursor.fetchone()[0] == 2


def test_configured_channel_layer_delivers_messages():
    layer = get_channel_layer()
    expected = "RedisChannelLayer" if os.environ.get("REDIS_URL") else "InMemoryChannelLayer"
    assert type(layer).__name__ == expected
    channel = async_to_sync(layer.new_channel)()
    payload = {"type": "test.message", "id": uuid.uuid4().hex}
    async_to_sync(layer.send)(channel, payload)
    assert async_to_sync(layer.receive)(channel) == payload


def test_redis_channel_layer(settings):
    """The production channel layer against a real Redis (skipped without one, failed in CI)."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    require(_reachable(host or "127.0.0.1", int(port or 6379)), f"Redis is not reachable at {url}")
    layer = RedisChannelLayer(hosts=[url])

    async def round_trip() -> dict:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "ping", "n": 7})
        message = await layer.receive(channel)
        await layer.flush()
        return message

    assert async_to_sync(round_trip)() == {"type": "ping", "n": 7}
