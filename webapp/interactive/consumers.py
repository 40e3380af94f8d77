"""The WebSocket consumer at /ws/interactive/ (protocol: docs/protocol.md).

It authenticates, checks every message, records every accepted action before a worker sees it, forwards it to
the worker the session is placed on, and relays the answers. It never waits inside a handler: answers come
back as channel-layer messages (``interactive_ready``, ``interactive_result``, ...). A watchdog moves the
session to another worker when the one it is on stops sending heartbeats while something is outstanding.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from inference.registry import configured_model
from webapp.segmentations import services
from webapp.segmentations.models import InteractiveSession, PromptEvent, Segment
from webapp.studies.access import can_view_series
from webapp.studies.models import Series

from . import placement
from .drafts import bring_segment_draft_up_to_date
from .inprocess import ensure_inprocess_worker
from .protocol import PROTOCOL_VERSION, ProtocolError, decode_frame, parse_message, request_of, with_request

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RateLimiter:
    """A token bucket: ``rate`` messages a second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.last = burst, time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class Pending:
    request: int
    received: float  # time.perf_counter() when the message arrived


@dataclass
class OpenSession:
    record: InteractiveSession
    series_uid: str
    segmentation: int
    segment: int
    worker_id: int | None = None
    worker_channel: str = ""
    state: str = "opening"  # opening, ready, recovering
    shape: tuple[int, int, int] | None = None
    pending: dict[int, Pending] = field(default_factory=dict)  # by event sequence
    sequence: int = 0  # the last event recorded, as far as this connection knows
    opened: float = field(default_factory=time.perf_counter)

    @property
    def id(self) -> str:
        return str(self.record.pk)


def _origin_allowed(scope: dict[str, Any]) -> bool:
    """Cookie-authenticated sockets must come from our own pages (cross-site WebSocket hijacking)."""
    origin = dict(scope.get("headers", [])).get(b"origin", b"").decode("latin-1")
    if not origin:
        return False
    if origin in settings.CORS_ALLOWED_ORIGINS:
        return True
    domain, _ = split_domain_port(urlsplit(origin).netloc)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def _check_inside(message: dict[str, Any], shape: tuple[int, int, int]) -> None:
    """Prompts must lie inside the volume, and slice prompts on their slice; else nothing is recorded."""

    def inside(index: list[int], what: str, *, stop: bool = False) -> None:
        limit = [s + 1 if stop else s for s in shape]
        if any(v >= m for v, m in zip(index, limit, strict=True)):
            raise ProtocolError("out_of_bounds", f"{what} {index} lies outside the volume {list(shape)}")

    kind = message["kind"]
    if kind == "point":
        inside(message["index"], "the point")
    elif kind == "box":
        inside(message["start"], "the box start")
        inside(message["stop"], "the box stop", stop=True)
        if any(b <= a for a, b in zip(message["start"], message["stop"], strict=True)):
            raise ProtocolError("bad_message", "a box needs start < stop on every axis (stop is exclusive)")
    else:
        axis, on = message["axis"], message["slice"]
        if on >= shape[axis]:
            raise ProtocolError(
                "out_of_bounds", f"slice {on} of axis {axis} is outside the volume {list(shape)}"
            )
        for point in message["points"]:
            inside(point, f"the {kind} point")
            if point[axis] != on:
                raise ProtocolError(
                    "bad_message", f"the {kind} point {point} is not on slice {on} of axis {axis}"
                )


class InteractiveConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if self.scope.get("auth") == "invalid-token" or user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if self.scope.get("auth") == "session" and not _origin_allowed(self.scope):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.user = user
        self.session: OpenSession | None = None
        self.limiter = RateLimiter(settings.ANNOVOX_WS_RATE, settings.ANNOVOX_WS_BURST)
        self.watchdog = asyncio.create_task(self._watch())
        await ensure_inprocess_worker()

    async def disconnect(self, code: int) -> None:
        watchdog = getattr(self, "watchdog", None)
        if watchdog is not None:
            watchdog.cancel()
        # The session stays open: a reload resumes it; idle eviction frees the worker's memory.

    # --- from the client ----------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        request = request_of(text_data, bytes_data)
        try:
            if not self.limiter.allow():
                raise ProtocolError(
                    "rate_limited",
                    f"more than {settings.ANNOVOX_WS_RATE:g} messages a second: message dropped",
                )
            if bytes_data is not None:
                await self._initial_mask(bytes_data)
                return
            message = parse_message(text_data or "")
            handler = getattr(self, f"_on_{message['type']}")
            await handler(message)
        except ProtocolError as error:
            await self._send_error(error.code, str(error), request)

    async def _on_open(self, message: dict[str, Any]) -> None:
        model = message.get("model") or configured_model()
        if not _MODEL_NAME.match(model):
            raise ProtocolError("unknown_model", f"{model!r} is not a model name")
        found = await database_sync_to_async(self._find_segment)(message)
        if found is None:
            raise ProtocolError(
                "not_found",
                f"no segment {message['segment']} in segmentation {message['segmentation']} "
                f"of series {message['series']}",
            )
        series, segment = found
        if not await database_sync_to_async(can_view_series)(self.user, series):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        if not await database_sync_to_async(services.open_sessions(self.user, segment, model).exists)():
            # A new session starts from the segment's draft: it must hold others' edits of a moment ago.
            await bring_segment_draft_up_to_date(segment)
        record, _ = await database_sync_to_async(services.resume_or_start_session)(self.user, segment, model)
        self.session = OpenSession(
            record, series.series_instance_uid, segment.segmentation_id, segment.number
        )
        await self._send_to_worker("interactive.open")

    @staticmethod
    def _find_segment(message: dict[str, Any]) -> tuple[Series, Segment] | None:
        segment = (
            Segment.objects.select_related("segmentation__series")
            .filter(
                segmentation_id=message["segmentation"],
                segmentation__series__series_instance_uid=message["series"],
                number=message["segment"],
            )
            .first()
        )
        return None if segment is None else (segment.segmentation.series, segment)

    def _ready_session(self) -> OpenSession:
        if self.session is None:
            raise ProtocolError("not_open", "open a segment first")
        if self.session.state != "ready" or self.session.shape is None:
            raise ProtocolError("not_ready", "the session is still opening: wait for ready")
        return self.session

    async def _on_prompt(self, message: dict[str, Any]) -> None:
        session = self._ready_session()
        assert session.shape is not None
        _check_inside(message, session.shape)
        payload = {k: v for k, v in message.items() if k not in ("type", "request")}
        await self._record_and_send(session, message["kind"], payload, None, message["request"])

    async def _on_undo(self, message: dict[str, Any]) -> None:
        await self._record_and_send(
            self._ready_session(), PromptEvent.Kind.UNDO, {}, None, message["request"]
        )

    async def _on_reset(self, message: dict[str, Any]) -> None:
        await self._record_and_send(
            self._ready_session(), PromptEvent.Kind.RESET, {}, None, message["request"]
        )

    async def _initial_mask(self, data: bytes) -> None:
        session = self._ready_session()
        assert session.shape is not None
        frame = decode_frame(data, session.shape)
        if frame.request == 0:
            raise ProtocolError("bad_frame", "an initial mask frame needs a request id above 0")
        await self._record_and_send(session, PromptEvent.Kind.INITIAL_MASK, {}, data, frame.request)

    async def _on_close(self, message: dict[str, Any]) -> None:
        session = self.session
        if session is None:
            raise ProtocolError("not_open", "no segment is open")
        self.session = None
        await database_sync_to_async(services.close_session)(session.id)
        if session.worker_channel:
            await self.channel_layer.send(
                session.worker_channel, {"type": "interactive.close", "session": session.id}
            )
        await self.send_json({"type": "closed", "session": session.id})

    async def _record_and_send(
        self, session: OpenSession, kind: str, payload: dict[str, Any], mask: bytes | None, request: int
    ) -> None:
        if len(session.pending) >= settings.ANNOVOX_WS_MAX_PENDING:
            raise ProtocolError(
                "busy", f"{len(session.pending)} requests still wait for their results: wait for one first"
            )
        received = time.perf_counter()
        event = await database_sync_to_async(services.record_event)(
            session.record, kind, payload, mask, sequence=session.sequence + 1
        )
        session.sequence = event.sequence
        session.pending[event.sequence] = Pending(request, received)
        message = {
            "type": "interactive.event",
            "session": session.id,
            "sequence": event.sequence,
            "request": request,
            "reply": self.channel_name,
            "kind": kind,
            "payload": payload,
        }
        if mask is not None:
            message["mask"] = mask
        await self.channel_layer.send(session.worker_channel, message)

    async def _send_to_worker(self, kind: str) -> None:
        """Place the session (its worker if live, else the least-loaded one) and send it ``kind``."""
        session = self.session
        assert session is not None
        worker = await database_sync_to_async(placement.place)(session.id)
        if worker is None:
            self.session = None
            raise ProtocolError(
                "no_worker",
                "no inference worker has room for another session: try again later, or start one "
                "(python manage.py inference_worker)",
            )
        session.worker_id, session.worker_channel = worker.pk, worker.channel_name
        await self.channel_layer.send(
            worker.channel_name, {"type": kind, "session": session.id, "reply": self.channel_name}
        )

    # --- from the worker ----------------------------------------------------------------------------------

    def _current(self, event: dict[str, Any]) -> OpenSession | None:
        session = self.session
        return session if session is not None and session.id == event["session"] else None

    async def interactive_ready(self, event: dict[str, Any]) -> None:
        session = self._current(event)
        if session is None:
            return
        recovering = session.state == "recovering"
        session.state, session.shape = "ready", tuple(event["shape"])
        session.sequence = max(session.sequence, event["sequence"])
        if recovering and session.pending:
            # The rebuilt session includes every outstanding event: one whole-mask frame answers them all.
            last = max(session.pending, key=lambda s: session.pending[s].request)
            frame = with_request(event["frame"], session.pending[last].request)
            await self.send(bytes_data=frame)
            for sequence, pending in sorted(session.pending.items()):
                await self.send_json(
                    {
                        "type": "result",
                        "request": pending.request,
                        "sequence": sequence,
                        "rebuilt": True,
                        "timings": {"total": time.perf_counter() - pending.received},
                    }
                )
            session.pending.clear()
            return
        await self.send_json(
            {
                "type": "ready",
                "protocol": PROTOCOL_VERSION,
                "session": session.id,
                "series": session.series_uid,
                "segmentation": session.segmentation,
                "segment": session.segment,
                "sequence": event["sequence"],
                "geometry": event["geometry"],
                "model": event["model"],
                "timings": {"total": time.perf_counter() - session.opened},
            }
        )
        await self.send(bytes_data=event["frame"])

    async def interactive_result(self, event: dict[str, Any]) -> None:
        session = self._current(event)
        if session is None:
            return
        pending = session.pending.pop(event["sequence"], None)
        if pending is None:
            return  # answered already (by a recovery)
        await self.send(bytes_data=event["frame"])
        timings = dict(event["timings"])
        timings["total"] = time.perf_counter() - pending.received
        await self.send_json(
            {
                "type": "result",
                "request": pending.request,
                "sequence": event["sequence"],
                "bytes": len(event["frame"]),
                "rebuilt": event["rebuilt"],
                "timings": timings,
            }
        )

    async def interactive_error(self, event: dict[str, Any]) -> None:
        session = self._current(event)
        if session is None:
            return
        session.pending.pop(event.get("sequence", 0), None)
        if session.state == "opening":
            self.session = None
        await self._send_error(event["code"], event["message"], event.get("request", 0))

    async def interactive_queued(self, event: dict[str, Any]) -> None:
        if self._current(event) is not None:
            await self.send_json(
                {"type": "queued", "request": event["request"], "position": event["position"]}
            )

    # --- recovery -----------------------------------------------------------------------------------------

    async def _watch(self) -> None:
        """While something is outstanding, check the worker's heartbeat; move the session when it stopped."""
        while True:
            await asyncio.sleep(settings.ANNOVOX_HEARTBEAT_S)
            session = self.session
            if session is None or session.worker_id is None:
                continue
            if not session.pending and session.state == "ready":
                continue
            if await database_sync_to_async(placement.worker_is_live)(session.worker_id):
                continue
            await database_sync_to_async(placement.declare_dead)(session.worker_id)
            session.state = "recovering" if session.state == "ready" else session.state
            try:
                await self._send_to_worker("interactive.open")
            except ProtocolError as error:
                await self._send_error(error.code, str(error), 0)

    # --- sending ------------------------------------------------------------------------------------------

    async def send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(content))

    async def _send_error(self, code: str, message: str, request: int = 0) -> None:
        await self.send_json({"type": "error", "code": code, "message": message, "request": request})
