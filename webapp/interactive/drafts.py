"""Drafts brought up to date before they are read.

A worker writes a session's draft a moment after the session's last event (``worker.DRAFT_DELAY_S``). A
reload in that moment would read a draft one step behind what the annotator saw and show the segment as it
was before the last edit. So whoever reads the working labelmap first asks the workers holding sessions
with events newer than their segment's draft to write it now, and waits for their answers (at most
FLUSH_TIMEOUT_S: a worker busy with a long queue must not hold the read up for ever). A new session starts
from its segment's draft (``services.resume_or_start_session``), so opening one does the same for that
segment first: another annotator's (or model's) edit of a moment ago is where it starts.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db.models import Max

from webapp.segmentations.models import Draft, InteractiveSession, Segment

from .placement import live_workers

logger = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 10.0


def sessions_ahead_of_their_drafts(
    segmentation_id: int, segment_id: int | None = None
) -> list[tuple[str, str]]:
    """(session id, worker channel) of each session of the segmentation (or of one of its segments) on a live
    worker whose last event was recorded after its segment's draft was written."""
    segments = Segment.objects.filter(segmentation_id=segmentation_id)
    if segment_id is not None:
        segments = segments.filter(pk=segment_id)
    sessions = (
        InteractiveSession.objects.filter(segment__in=segments, worker__in=live_workers())
        .annotate(last_event=Max("events__created"))
        .filter(last_event__isnull=False)
        .values_list("id", "segment_id", "last_event", "worker__channel_name")
    )
    written = dict(Draft.objects.filter(segment__in=segments).values_list("segment_id", "updated"))
    return [
        (str(session), channel)
        for session, segment, last_event, channel in sessions
        if segment not in written or last_event > written[segment]
    ]


def bring_drafts_up_to_date(segmentation_id: int) -> None:
    """Has the workers write the drafts of the segmentation's sessions that are behind; a worker that does
    not answer in time is logged (its draft may then be a step behind)."""
    behind = sessions_ahead_of_their_drafts(segmentation_id)
    if behind and not async_to_sync(_flush)(behind):
        logger.warning("segmentation %s: some workers did not write their drafts in time", segmentation_id)


async def bring_segment_draft_up_to_date(segment: Segment) -> None:
    """The same for one segment, before a new session starts from its draft."""
    behind = await database_sync_to_async(sessions_ahead_of_their_drafts)(segment.segmentation_id, segment.pk)
    if behind and not await _flush(behind):
        logger.warning("segment %s: some workers did not write their drafts in time", segment.pk)


async def _flush(sessions: list[tuple[str, str]]) -> bool:
    layer = get_channel_layer()
    reply = await layer.new_channel("drafts.")
    for session, channel in sessions:
        await layer.send(channel, {"type": "interactive.flush", "session": session, "reply": reply})
    waiting = {session for session, _ in sessions}
    try:
        async with asyncio.timeout(FLUSH_TIMEOUT_S):
            while waiting:
                waiting.discard((await layer.receive(reply)).get("session"))
    except TimeoutError:
        return False
    return True
