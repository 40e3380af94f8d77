"""The embedded default's inference worker: the same Worker, as a task in the web server's own event loop.

Started by the first WebSocket connection when ANNOVOX_INPROCESS_WORKER is on (the default with the
in-memory channel layer, which only reaches consumers in the same process).
"""

from __future__ import annotations

import asyncio

from django.conf import settings

from .worker import Worker

_started: dict[int, asyncio.Future[Worker]] = {}


async def ensure_inprocess_worker() -> Worker | None:
    if not settings.ANNOVOX_INPROCESS_WORKER:
        return None
    loop = asyncio.get_running_loop()
    future = _started.get(id(loop))
    if future is None:
        future = _started[id(loop)] = loop.create_future()
        worker = Worker(settings.ANNOVOX_INPROCESS_DEVICE, settings.ANNOVOX_INPROCESS_MAX_SESSIONS)
        task = loop.create_task(worker.run(ready=lambda: future.set_result(worker)))
        task.add_done_callback(lambda t: _failed(loop, future, t))
    return await asyncio.shield(future)


def _failed(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Worker], task: asyncio.Task[None]
) -> None:
    _started.pop(id(loop), None)  # the next connection starts a new one
    if not future.done():
        error = task.exception() if not task.cancelled() else None
        future.set_exception(error or RuntimeError("the in-process inference worker stopped"))
