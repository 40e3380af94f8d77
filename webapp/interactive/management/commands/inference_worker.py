"""``python manage.py inference_worker --device cpu|cuda:N --max-sessions N``: one worker process."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from webapp.interactive.worker import Worker


class Command(BaseCommand):
    help = "Run an inference worker: it registers, sends heartbeats and serves interactive sessions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
        parser.add_argument("--max-sessions", type=int, default=8, help="sessions held at once (default 8)")
        parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["max_sessions"] < 1:
            raise CommandError("--max-sessions must be at least 1")
        if "InMemoryChannelLayer" in settings.CHANNEL_LAYERS["default"]["BACKEND"]:
            raise CommandError(
                "a separate worker needs a shared channel layer: set REDIS_URL (the embedded default runs "
                "its worker inside the web server)"
            )
        worker = Worker(options["device"], options["max_sessions"], threads=options["threads"])
        asyncio.run(self._serve(worker))

    async def _serve(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run(ready=lambda: self.stdout.write(f"worker {worker.name} ready", ending="\n"))
