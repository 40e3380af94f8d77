"""Which worker holds which session: liveness by heartbeat, placement on the least-loaded live worker.

Plain synchronous ORM functions; the consumer calls them through ``database_sync_to_async``.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from webapp.segmentations.models import InteractiveSession

from .models import InferenceWorker


def live_workers() -> QuerySet[InferenceWorker]:
    """Workers that have not stopped and sent a heartbeat within ANNOVOX_WORKER_TIMEOUT_S."""
    fresh = timezone.now() - timedelta(seconds=settings.ANNOVOX_WORKER_TIMEOUT_S)
    return InferenceWorker.objects.filter(stopped__isnull=True, heartbeat__gte=fresh)


def worker_is_live(worker_id: int) -> bool:
    return live_workers().filter(pk=worker_id).exists()


def place(session_id: str) -> InferenceWorker | None:
    """The worker that serves ``session_id``: the one it is on if that one is live (affinity), else the live
    worker with the fewest open sessions that has room for one more; None when every worker is full or
    none is running."""
    with transaction.atomic():
        session = InteractiveSession.objects.select_for_update().get(pk=session_id)
        if session.worker_id is not None and worker_is_live(session.worker_id):
            return session.worker
        candidates = (
            live_workers()
            .annotate(load=Count("assigned_sessions", filter=Q(assigned_sessions__closed__isnull=True)))
            .order_by("load", "started")
        )
        worker = next((w for w in candidates if w.load < w.max_sessions), None)
        session.worker = worker
        session.save(update_fields=["worker"])
        return worker


def declare_dead(worker_id: int) -> None:
    """A worker whose heartbeat stopped: never chosen again; its sessions move when next used."""
    InferenceWorker.objects.filter(pk=worker_id, stopped__isnull=True).update(stopped=timezone.now())
    InteractiveSession.objects.filter(worker_id=worker_id).update(worker=None)
