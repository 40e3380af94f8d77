"""The inference worker: holds engine sessions, runs their prompts, answers over the channel layer.

This is the one place where Django and the engine meet (DESIGN.md). A worker registers a row in
``InferenceWorker`` with its channel name, refreshes its heartbeat every ANNOVOX_HEARTBEAT_S, and serves these
messages, which every consumer sends to the worker its session is placed on:

- ``interactive.open`` {session, reply}: hold the session (rebuilt from its recorded events if this worker
  does not hold it yet) and answer ``interactive.ready`` with the geometry and the whole current mask.
- ``interactive.event`` {session, sequence, request, reply}: apply recorded event ``sequence`` and answer
  ``interactive.result`` with the changed region (or ``interactive.error``). A worker that does not hold the
  session (evicted, or placed here after another worker died) rebuilds it by replaying the record, which
  already holds this event, and answers with the whole mask instead.
- ``interactive.close`` {session}: write the draft and let the session go.
- ``interactive.flush`` {session, reply}: write the session's draft now (after the session's queued jobs) and
  answer ``interactive.flushed``; a read of the working labelmap asks for it (``drafts.py``).

Jobs run one at a time on one compute thread, first come first served; a job that has to wait is announced
to its client with ``interactive.queued`` and its position. Idle sessions are evicted after
ANNOVOX_SESSION_IDLE_S (the record stays; the next message rebuilds them), and each session's latest mask is
written as its segment's draft once it has been idle for a moment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from inference.errors import EngineError
from inference.model import Model, load_model
from inference.prompts import Box
from inference.registry import configured_model
from inference.session import Result, Session
from webapp.segmentations.models import Draft, InteractiveSession, PromptEvent
from webapp.studies.volume.geometry import VolumeError
from webapp.studies.volume.series import build_volume

from .models import InferenceWorker
from .protocol import MaskFrame, ProtocolError, decode_frame, encode_frame

logger = logging.getLogger(__name__)
T = TypeVar("T")
Job = tuple[Callable[[], Any], float]  # the work, and when it was queued (time.monotonic)

DRAFT_DELAY_S = 1.0  # a session's draft is written once it has had no prompt for this long


class JobError(Exception):
    """A job that cannot be done; ``code`` and the message go to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class HeldSession:
    session_id: str
    engine: Session
    series_uid: str
    segment_id: int
    geometry: dict[str, Any]  # of the series' voxel grid, as the ready message gives it
    sequence: int  # the last event applied
    extent: Box | None = None  # holds every voxel set since the last reset (the union of changed regions)
    last_used: float = field(default_factory=time.monotonic)
    dirty: bool = False  # the mask changed since the draft was written


def apply_event(engine: Session, kind: str, payload: dict[str, Any], mask: bytes | None) -> Result | None:
    """Do one recorded event to an engine session. Returns what changed, or None for a reset (everything)."""
    positive = bool(payload.get("positive", True))
    if kind == PromptEvent.Kind.POINT:
        k, j, i = payload["index"]
        return engine.add_point((k, j, i), positive)
    if kind == PromptEvent.Kind.BOX:
        (k0, j0, i0), (k1, j1, i1) = payload["start"], payload["stop"]
        return engine.add_box((k0, j0, i0), (k1, j1, i1), positive)
    if kind == PromptEvent.Kind.SCRIBBLE:
        return engine.add_scribble(
            axis=payload["axis"], index=payload["slice"], polyline=payload["points"], positive=positive
        )
    if kind == PromptEvent.Kind.LASSO:
        return engine.add_lasso(
            axis=payload["axis"], index=payload["slice"], polygon=payload["points"], positive=positive
        )
    if kind == PromptEvent.Kind.INITIAL_MASK:
        assert mask is not None
        frame = decode_frame(bytes(mask), engine.shape)
        values = np.zeros(engine.shape, dtype=bool)
        values[tuple(slice(a, b) for a, b in zip(frame.start, frame.stop, strict=True))] = frame.mask
        return engine.set_initial_mask(values)
    if kind == PromptEvent.Kind.UNDO:
        return engine.undo()
    if kind == PromptEvent.Kind.RESET:
        engine.reset()
        return None
    raise EngineError(f"unknown event kind {kind!r}")


def _union(extent: Box | None, start: tuple[int, int, int], stop: tuple[int, int, int]) -> Box | None:
    """The box holding ``extent`` and [start, stop) (an empty box adds nothing)."""
    if any(b <= a for a, b in zip(start, stop, strict=True)):
        return extent
    (k0, j0, i0), (k1, j1, i1) = start, stop
    if extent is None:
        return ((k0, k1), (j0, j1), (i0, i1))
    (a0, a1), (b0, b1), (c0, c1) = extent
    return ((min(a0, k0), max(a1, k1)), (min(b0, j0), max(b1, j1)), (min(c0, i0), max(c1, i1)))


def whole_mask_frame(held: HeldSession, request: int) -> MaskFrame:
    """The whole current mask as a REPLACE frame over its bounding box (found inside the session's extent,
    which holds every voxel that was ever set, without reading the whole volume)."""
    empty = MaskFrame(request, (0, 0, 0), (0, 0, 0), np.zeros((0, 0, 0), dtype=bool), replace=True)
    if held.extent is None:
        return empty
    (k0, k1), (j0, j1), (i0, i1) = held.extent
    mask = held.engine.mask_in((k0, j0, i0), (k1, j1, i1))
    hits = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != d))) for d in range(3)]
    if not len(hits[0]):
        return empty
    low = [int(h[0]) for h in hits]
    high = [int(h[-1]) + 1 for h in hits]
    region = mask[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
    start = (k0 + low[0], j0 + low[1], i0 + low[2])
    stop = (k0 + high[0], j0 + high[1], i0 + high[2])
    return MaskFrame(request, start, stop, region.copy(), replace=True)


class FairQueue:
    """Jobs served round-robin across sessions and in order within each, so that one annotator's burst of
    prompts delays another's by at most one job."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[Job]] = {}
        self._turns: deque[str] = deque()
        self._waiting = asyncio.Event()

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def put(self, session_id: str, job: Job) -> int:
        """Queue ``job``; returns how many queued jobs will run before it."""
        queue = self._queues.get(session_id)
        if queue is None:
            queue = self._queues[session_id] = deque()
            self._turns.append(session_id)
        mine = len(queue)
        ahead = mine + sum(min(len(q), mine + 1) for s, q in self._queues.items() if s != session_id)
        queue.append(job)
        self._waiting.set()
        return ahead

    async def get(self) -> Job:
        while not self._turns:
            self._waiting.clear()
            await self._waiting.wait()
        session_id = self._turns.popleft()
        queue = self._queues[session_id]
        job = queue.popleft()
        if queue:
            self._turns.append(session_id)
        else:
            del self._queues[session_id]
        return job


class Worker:
    """One inference worker process (or, in the embedded default, one task in the web server's process)."""

    def __init__(
        self,
        device: str = "cpu",
        max_sessions: int = 8,
        *,
        threads: int | None = None,
        layer: BaseChannelLayer | None = None,
    ) -> None:
        self.device = device
        self.max_sessions = max_sessions
        self.threads = threads
        self.layer = layer or get_channel_layer()
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.sessions: dict[str, HeldSession] = {}
        self.models: dict[str, Model] = {}
        self.row: InferenceWorker | None = None
        self.channel_name = ""
        # Engine work and the records it reads and writes, one at a time; heartbeats on their own thread so
        # that a long replay does not make the worker look dead.
        self._compute = ThreadPoolExecutor(1, thread_name_prefix="annovox-compute")
        self._control = ThreadPoolExecutor(1, thread_name_prefix="annovox-heartbeat")
        self._jobs = FairQueue()
        self._busy = False
        self._stopping = asyncio.Event()
        self._outcomes: list[tuple[str, int, str, str]] = []  # (session, sequence, status, error)

    # --- running ------------------------------------------------------------------------------------------

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        """Register, then serve until `stop` is called."""
        self.channel_name = await self.layer.new_channel("inference-worker.")
        await self._on(self._control, self._register)
        logger.info("inference worker %s on %s serves %s", self.name, self.device, self.channel_name)
        tasks = [
            asyncio.create_task(self._receive_loop()),
            asyncio.create_task(self._compute_loop()),
            asyncio.create_task(self._heartbeat_loop()),
        ]
        if ready is not None:
            ready()
        try:
            await self._stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._on(self._compute, self._shut_down)
            self._compute.shutdown(wait=False)
            self._control.shutdown(wait=False)

    def stop(self) -> None:
        self._stopping.set()

    async def _on(self, executor: ThreadPoolExecutor, function: Callable[[], T]) -> T:
        def call() -> T:
            close_old_connections()
            try:
                return function()
            finally:
                close_old_connections()

        return await asyncio.get_running_loop().run_in_executor(executor, call)

    def _register(self) -> None:
        self.row = InferenceWorker.objects.create(
            name=self.name,
            channel_name=self.channel_name,
            device=self.device,
            model_name=configured_model(),
            max_sessions=self.max_sessions,
            heartbeat=timezone.now(),
        )

    def _beat(self) -> None:
        assert self.row is not None
        updated = InferenceWorker.objects.filter(pk=self.row.pk, stopped__isnull=True).update(
            heartbeat=timezone.now()
        )
        if not updated:
            # Declared dead (a pause longer than the timeout): its sessions have moved on. Come back empty.
            logger.warning(
                "worker %s was declared dead; dropping its sessions and registering again", self.name
            )
            self.sessions.clear()
            self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            self._register()

    def _shut_down(self) -> None:
        self._write_outcomes()
        for session_id in list(self.sessions):
            self._let_go(session_id)
        if self.row is not None:
            InferenceWorker.objects.filter(pk=self.row.pk).update(stopped=timezone.now())

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(settings.ANNOVOX_HEARTBEAT_S)
            try:
                await self._on(self._control, self._beat)
            except Exception:  # a database hiccup must not stop the heartbeats
                logger.exception("heartbeat of %s failed", self.name)
            if not self._busy and not len(self._jobs):
                now = time.monotonic()
                for session_id, held in list(self.sessions.items()):
                    if now - held.last_used > settings.ANNOVOX_SESSION_IDLE_S:
                        self._jobs.put(session_id, (partial(self._evict, session_id), time.monotonic()))
                    elif held.dirty and now - held.last_used > DRAFT_DELAY_S:
                        self._jobs.put(session_id, (partial(self._write_draft, session_id), time.monotonic()))

    async def _receive_loop(self) -> None:
        while True:
            message = await self.layer.receive(self.channel_name)
            kind = message.get("type")
            if kind == "interactive.open":
                await self._enqueue(message, partial(self._open, message))
            elif kind == "interactive.event":
                await self._enqueue(message, partial(self._event, message))
            elif kind == "interactive.close":
                self._jobs.put(message["session"], (partial(self._close, message), time.monotonic()))
            elif kind == "interactive.flush":
                self._jobs.put(message["session"], (partial(self._flush, message), time.monotonic()))
            else:
                logger.warning("worker %s ignores a message of type %r", self.name, kind)

    async def _enqueue(self, message: dict[str, Any], job: Callable[[], dict[str, Any]]) -> None:

        def answered() -> dict[str, Any]:
            try:
                return job()
            except JobError as error:
                return self._error(message, error.code, str(error))
            except Exception as error:  # the worker must outlive any one job
                logger.exception("job %s failed", message.get("type"))
                return self._error(message, "internal", f"the worker failed: {error!r}")

        ahead = self._jobs.put(message["session"], (answered, time.monotonic())) + (1 if self._busy else 0)
        if ahead:
            await self.layer.send(
                message["reply"],
                {
                    "type": "interactive.queued",
                    "session": message["session"],
                    "request": message.get("request", 0),
                    "position": ahead,
                },
            )

    async def _compute_loop(self) -> None:
        while True:
            job, queued_at = await self._jobs.get()
            self._busy = True
            try:
                waited = time.monotonic() - queued_at
                answer = await self._on(self._compute, job)
                if isinstance(answer, dict) and "reply" in answer:
                    reply = answer.pop("reply")
                    answer.setdefault("timings", {})["queue"] = waited
                    await self.layer.send(reply, answer)
                if self._outcomes:
                    await self._on(self._compute, self._write_outcomes)
            finally:
                self._busy = False

    # --- jobs (on the compute thread) ---------------------------------------------------------------------

    @staticmethod
    def _error(message: dict[str, Any], code: str, text: str) -> dict[str, Any]:
        return {
            "type": "interactive.error",
            "reply": message["reply"],
            "session": message["session"],
            "request": message.get("request", 0),
            "sequence": message.get("sequence", 0),
            "code": code,
            "message": text,
        }

    def _model(self, name: str) -> Model:
        if name not in self.models:
            try:
                self.models[name] = load_model(name, self.device, threads=self.threads)
            except EngineError as error:
                raise JobError(
                    "model_unavailable", f"this worker cannot load model {name!r}: {error}"
                ) from error
        return self.models[name]

    def _hold(self, session_id: str) -> tuple[HeldSession, bool]:
        """The held session, or one rebuilt from its record; and whether it was rebuilt."""
        held = self.sessions.get(session_id)
        if held is not None:
            return held, False
        record = (
            InteractiveSession.objects.select_related("segment__segmentation__series")
            .filter(pk=session_id)
            .first()
        )
        if record is None:
            raise JobError("unknown_session", f"there is no session {session_id}")
        model = self._model(record.model_name)
        series = record.segment.segmentation.series
        try:
            volume = build_volume(series)
        except VolumeError as error:
            raise JobError(
                "bad_series", f"series {series.series_instance_uid} makes no volume: {error}"
            ) from error
        engine = Session(model)
        engine.set_image(volume.array, volume.spacing[::-1])
        geometry = {
            "shape": list(volume.array.shape),
            "spacing": list(volume.spacing),
            "origin": list(volume.origin),
            "direction": np.asarray(volume.direction).tolist(),
        }
        held = HeldSession(session_id, engine, series.series_instance_uid, record.segment_id, geometry, 0)
        events = list(record.events.exclude(status=PromptEvent.Status.REJECTED))
        resets = [n for n, e in enumerate(events) if e.kind == PromptEvent.Kind.RESET]
        # A reset clears prompts, mask and undo steps: what came before it cannot matter.
        for event in events[resets[-1] + 1 :] if resets else events:
            try:
                self._apply(held, event.sequence, event.kind, event.payload, event.mask)
            except JobError:
                continue  # refused when it was new too, or refused now for the first time: skipped either way
        held.sequence = events[-1].sequence if events else 0
        InteractiveSession.objects.filter(pk=session_id).update(
            worker=self.row, model_license=model.license, model_version=model.version
        )
        self.sessions[session_id] = held
        return held, True

    def _apply(
        self, held: HeldSession, sequence: int, kind: str, payload: dict[str, Any], mask: bytes | None
    ) -> Result | None:
        """Apply one event; its outcome is written with the next `_write_outcomes`. Raises JobError when the
        engine refuses it (the session is unchanged then)."""
        held.sequence, held.last_used = sequence, time.monotonic()
        try:
            result = apply_event(held.engine, kind, payload, mask)
        except (EngineError, ProtocolError, KeyError, TypeError, ValueError) as error:
            code = error.code if isinstance(error, ProtocolError) else "rejected"
            self._outcomes.append((held.session_id, sequence, PromptEvent.Status.REJECTED, str(error)[:500]))
            raise JobError(code, str(error)) from error
        self._outcomes.append((held.session_id, sequence, PromptEvent.Status.APPLIED, ""))
        held.dirty = True
        held.extent = None if result is None else _union(held.extent, result.start, result.stop)
        return result

    def _write_outcomes(self) -> None:
        """Record which events were applied or refused (after the answer went out: off the prompt's path)."""
        outcomes, self._outcomes = self._outcomes, []
        for session_id, sequence, status, error in outcomes:
            PromptEvent.objects.filter(
                session_id=session_id, sequence=sequence, status=PromptEvent.Status.PENDING
            ).update(status=status, error=error)
        for session_id in {o[0] for o in outcomes}:
            InteractiveSession.objects.filter(pk=session_id).update(last_activity=timezone.now())

    def _open(self, message: dict[str, Any]) -> dict[str, Any]:
        held, _ = self._hold(message["session"])
        began = time.perf_counter()
        frame = encode_frame(whole_mask_frame(held, 0))
        model = held.engine.model
        return {
            "type": "interactive.ready",
            "reply": message["reply"],
            "session": message["session"],
            "sequence": held.sequence,
            "shape": list(held.engine.shape),
            "geometry": held.geometry,
            "model": {
                "name": model.name,
                "version": model.version,
                "license": model.license,
                "device": str(model.device),
            },
            "frame": frame,
            "timings": {"encoding": time.perf_counter() - began},
        }

    def _event(self, message: dict[str, Any]) -> dict[str, Any]:
        session_id, sequence, request = message["session"], int(message["sequence"]), int(message["request"])
        held = self.sessions.get(session_id)
        if held is None or sequence != held.sequence + 1:
            # Not held (evicted, or moved here from a dead worker) or out of step: the record holds this
            # event already, so the rebuilt session includes it. The client gets the whole mask.
            if held is not None:
                del self.sessions[session_id]
            began = time.perf_counter()
            held, _ = self._hold(session_id)
            rebuilt = time.perf_counter()
            frame = encode_frame(whole_mask_frame(held, request))
            return self._result(message, frame, rebuilt - began, time.perf_counter() - rebuilt, rebuilt=True)
        # The message carries the event as the consumer recorded it.
        result = self._apply(held, sequence, message["kind"], message["payload"], message.get("mask"))
        began = time.perf_counter()
        if result is None:  # reset: the whole mask is empty now
            frame = encode_frame(whole_mask_frame(held, request))
            inference = 0.0
        else:
            frame = encode_frame(MaskFrame(request, result.start, result.stop, result.mask))
            inference = result.timings["total"]
        return self._result(message, frame, inference, time.perf_counter() - began, rebuilt=False)

    @staticmethod
    def _result(
        message: dict[str, Any], frame: bytes, inference: float, encoding: float, *, rebuilt: bool
    ) -> dict[str, Any]:
        return {
            "type": "interactive.result",
            "reply": message["reply"],
            "session": message["session"],
            "sequence": message["sequence"],
            "request": message["request"],
            "frame": frame,
            "rebuilt": rebuilt,
            "timings": {"inference": inference, "encoding": encoding},
        }

    def _close(self, message: dict[str, Any]) -> None:
        self._let_go(message["session"])

    def _flush(self, message: dict[str, Any]) -> dict[str, Any]:
        self._write_draft(message["session"])
        return {"type": "interactive.flushed", "reply": message["reply"], "session": message["session"]}

    def _evict(self, session_id: str) -> None:
        held = self.sessions.get(session_id)
        if held is not None and time.monotonic() - held.last_used > settings.ANNOVOX_SESSION_IDLE_S:
            logger.info("evicting idle session %s", session_id)
            self._let_go(session_id)

    def _let_go(self, session_id: str) -> None:
        if session_id in self.sessions:
            self._write_draft(session_id)
            del self.sessions[session_id]
        InteractiveSession.objects.filter(pk=session_id, worker=self.row).update(worker=None)

    def _write_draft(self, session_id: str) -> None:
        held = self.sessions.get(session_id)
        if held is None or not held.dirty:
            return
        frame = whole_mask_frame(held, 0)
        Draft.objects.update_or_create(
            segment_id=held.segment_id,
            defaults={
                "shape": list(held.engine.shape),
                "frame": encode_frame(frame),
                "empty": frame.start == frame.stop,
                "session_id": session_id,
                "sequence": held.sequence,
            },
        )
        held.dirty = False
