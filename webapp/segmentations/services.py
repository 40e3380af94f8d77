"""Service functions for interactive sessions and their records (synchronous ORM; no Django views here)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Max, QuerySet
from django.utils import timezone

from .models import Draft, InteractiveSession, PromptEvent, Segment


def resume_or_start_session(
    user: AbstractBaseUser, segment: Segment, model_name: str
) -> tuple[InteractiveSession, bool]:
    """The user's open session on ``segment`` with ``model_name`` (a reload resumes it), or a new one. A new
    session starts from the segment's draft, recorded as its first event (an initial mask), so that prompts
    refine what is already there. Returns the session and whether it is new."""
    with transaction.atomic():
        existing = open_sessions(user, segment, model_name).select_for_update().first()
        if existing is not None:
            return existing, False
        session = InteractiveSession.objects.create(segment=segment, user=user, model_name=model_name)
        draft = Draft.objects.filter(segment=segment).first()
        if draft is not None and not draft.empty and draft_is_newer(draft, latest_save(segment)):
            record_event(session, PromptEvent.Kind.INITIAL_MASK, {}, bytes(draft.frame))
        return session, True


def open_sessions(user: AbstractBaseUser, segment: Segment, model_name: str) -> QuerySet[InteractiveSession]:
    """The user's open sessions on ``segment`` with ``model_name``, newest first (the first is resumed)."""
    return InteractiveSession.objects.filter(
        segment=segment, user=user, model_name=model_name, closed__isnull=True
    ).order_by("-created")


def latest_save(segment: Segment) -> datetime | None:
    """When the segment's segmentation was last saved (None: never)."""
    return segment.segmentation.versions.aggregate(last=Max("created"))["last"]


def draft_is_newer(draft: Draft, saved: datetime | None) -> bool:
    """Whether the draft holds work newer than a save made at ``saved``. What counts is when the draft's
    last event was recorded, not when the worker wrote the draft: workers write drafts a moment after a
    session goes idle, which can be after a save that already holds that work (the client saves what is on
    screen, once everything it sent has been answered)."""
    if saved is None:
        return True
    recorded = (
        PromptEvent.objects.filter(session_id=draft.session_id, sequence=draft.sequence)
        .values_list("created", flat=True)
        .first()
    )
    return (recorded or draft.updated) > saved


def record_event(
    session: InteractiveSession,
    kind: str,
    payload: dict[str, Any],
    mask: bytes | None = None,
    *,
    sequence: int | None = None,
) -> PromptEvent:
    """Write an accepted action as the session's next event (before any worker sees it). ``sequence``: the
    number the caller expects it to get (one query fewer); another connection on the same session may have
    taken it, and then the next free one is used."""
    for _ in range(5):
        try:
            with transaction.atomic():
                if sequence is None:
                    sequence = (
                        PromptEvent.objects.filter(session_id=session.pk).aggregate(last=Max("sequence"))[
                            "last"
                        ]
                        or 0
                    ) + 1
                return PromptEvent.objects.create(
                    session_id=session.pk,
                    sequence=sequence,
                    kind=kind,
                    payload=payload,
                    mask=mask,
                    user_id=session.user_id,
                    model_name=session.model_name,
                )
        except IntegrityError:
            sequence = None
    raise IntegrityError(f"could not number an event of session {session.pk}")


def close_session(session_id: str) -> None:
    InteractiveSession.objects.filter(pk=session_id, closed__isnull=True).update(
        closed=timezone.now(), worker=None
    )
