"""A small synchronous client of the interactive protocol (docs/protocol.md), for tests and
``bench/interactive.py``: it keeps the mask the way a viewer would, from the frames it receives."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from webapp.interactive.protocol import MaskFrame, decode_frame, encode_frame


class InteractiveClient:
    def __init__(self, url: str, token: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        extra = dict(headers or {})
        if token:
            extra["Authorization"] = f"Bearer {token}"
        self._stack = ExitStack()
        self.socket: ClientConnection = self._stack.enter_context(
            connect(url, additional_headers=extra, max_size=None, open_timeout=30)
        )
        self.mask: np.ndarray | None = None
        self.ready: dict[str, Any] = {}
        self.frames: list[MaskFrame] = []  # every frame received, in order
        self.messages: list[dict[str, Any]] = []  # every JSON message received, in order
        self._request = 0

    def close(self) -> None:
        try:
            self._stack.close()
        except ConnectionClosed:
            pass  # closed by the server already, with the code a test has looked at

    def __enter__(self) -> InteractiveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sending ------------------------------------------------------------------------------------------

    def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            message = json.dumps(message)
        self.socket.send(message)

    def next_request(self) -> int:
        self._request += 1
        return self._request

    def open(self, series: str, segmentation: int, segment: int, timeout: float = 120, **extra: Any) -> dict:
        self.send(
            {"type": "open", "series": series, "segmentation": segmentation, "segment": segment, **extra}
        )
        self.ready = self.wait_for("ready", timeout=timeout)
        self.mask = np.zeros(self.ready["geometry"]["shape"], dtype=bool)
        self._apply(self.receive_frame(timeout))
        return self.ready

    def prompt(self, kind: str, positive: bool = True, **fields: Any) -> int:
        request = self.next_request()
        self.send({"type": "prompt", "request": request, "kind": kind, "positive": positive, **fields})
        return request

    def undo(self) -> int:
        request = self.next_request()
        self.send({"type": "undo", "request": request})
        return request

    def reset(self) -> int:
        request = self.next_request()
        self.send({"type": "reset", "request": request})
        return request

    def initial_mask(self, mask: np.ndarray) -> int:
        request = self.next_request()
        shape = tuple(int(s) for s in mask.shape)
        self.send(
            encode_frame(MaskFrame(request, (0, 0, 0), (shape[0], shape[1], shape[2]), mask, replace=True))
        )
        return request

    # --- receiving ----------------------------------------------------------------------------------------

    def receive(self, timeout: float = 60) -> dict[str, Any] | MaskFrame:
        data = self.socket.recv(timeout=timeout)
        if isinstance(data, bytes):
            frame = decode_frame(data)
            self.frames.append(frame)
            return frame
        message = json.loads(data)
        self.messages.append(message)
        return message

    def receive_frame(self, timeout: float = 60) -> MaskFrame:
        item = self.receive(timeout)
        if not isinstance(item, MaskFrame):
            raise AssertionError(f"expected a mask frame, got {item}")
        return item

    def wait_for(self, kind: str, request: int | None = None, timeout: float = 60) -> dict[str, Any]:
        """The next JSON message of ``kind`` (and ``request``); frames on the way update the mask. An error
        that is not what was waited for raises."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.receive(max(0.01, deadline - time.monotonic()))
            if isinstance(item, MaskFrame):
                self._apply(item)
                continue
            if item["type"] == kind and (request is None or item.get("request") == request):
                return item
            if item["type"] == "error" and kind != "error":
                raise AssertionError(f"error from the server while waiting for {kind}: {item}")

    def result(self, request: int, timeout: float = 120) -> dict[str, Any]:
        return self.wait_for("result", request, timeout)

    def _apply(self, frame: MaskFrame) -> None:
        assert self.mask is not None
        if frame.replace:
            self.mask[...] = False
        region = tuple(slice(a, b) for a, b in zip(frame.start, frame.stop, strict=True))
        self.mask[region] = frame.mask
