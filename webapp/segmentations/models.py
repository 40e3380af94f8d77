"""Segmentations of a series, their segments, their saved versions, and what the annotator did to them.

A segmentation belongs to one source series and holds numbered segments (DICOM SEG segment numbers, from 1).
Each save is a :class:`SegmentationVersion`: a DICOM SEG instance in the study database, never changed
afterwards; all versions of a segmentation form one SEG series.
Interactive work on one segment is an :class:`InteractiveSession`; every prompt, undo and reset in it is a
:class:`PromptEvent`, written before a worker sees it, so a session can always be rebuilt by replaying its
events. :class:`Draft` keeps the latest mask of each segment, so a reloaded page shows it at once.
"""

import uuid

from django.conf import settings
from django.db import models
from pydicom.uid import generate_uid

from webapp.studies.models import Instance, Series


def _new_uid() -> str:
    return str(generate_uid())


def _tissue() -> dict[str, str]:
    # SNOMED CT "Tissue": the category and type of a segment nobody described further.
    return {"value": "85756007", "scheme": "SCT", "meaning": "Tissue"}


class Segmentation(models.Model):
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="segmentations")
    label = models.CharField(max_length=64, help_text="Content label (DICOM SEG ContentLabel).")
    description = models.CharField(max_length=256, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True)
    created = models.DateTimeField(auto_now_add=True)
    # The SEG series its versions are saved in (one instance per version).
    seg_series_instance_uid = models.CharField(max_length=64, unique=True, default=_new_uid)

    def __str__(self) -> str:
        return f"{self.label} on {self.series}"


class Segment(models.Model):
    segmentation = models.ForeignKey(Segmentation, on_delete=models.CASCADE, related_name="segments")
    number = models.PositiveSmallIntegerField(help_text="Segment number, from 1, unique in its segmentation.")
    label = models.CharField(max_length=64)
    color = models.CharField(max_length=7, default="#e6194b", help_text="#rrggbb")
    category = models.JSONField(default=_tissue, help_text="Coded category: {value, scheme, meaning}.")
    type = models.JSONField(default=_tissue, help_text="Coded property type: {value, scheme, meaning}.")
    tracking_id = models.CharField(max_length=64, blank=True)
    tracking_uid = models.CharField(max_length=64, default=_new_uid)
    # How the segment was made before Annovox saw it (from a loaded SEG); AI prompts here make it
    # SEMIAUTOMATIC. Empty: MANUAL unless AI prompts contributed.
    algorithm = models.JSONField(default=dict, blank=True, help_text="{type, name, version} or {}")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segmentation", "number"], name="unique_segment_number"),
            models.CheckConstraint(condition=models.Q(number__gte=1), name="segment_number_from_1"),
        ]

    def __str__(self) -> str:
        return f"{self.number}: {self.label}"


class Draft(models.Model):
    """The latest mask of a segment, as the interactive protocol's mask frame (REPLACE: the region is the
    mask's bounding box, everything outside it is 0)."""

    segment = models.OneToOneField(Segment, on_delete=models.CASCADE, related_name="draft")
    shape = models.JSONField(help_text="[k, j, i] of the series' voxel grid")
    frame = models.BinaryField()
    empty = models.BooleanField()
    session = models.ForeignKey("InteractiveSession", on_delete=models.SET_NULL, null=True, related_name="+")
    sequence = models.PositiveIntegerField(help_text="The last event of the session the mask includes.")
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"draft of segment {self.segment_id}"


class InteractiveSession(models.Model):
    """One run of AI prompts on one segment with one model; rebuilt from its events whenever needed."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="interactive_sessions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    model_name = models.CharField(max_length=200)
    model_license = models.CharField(max_length=100, blank=True)
    model_version = models.CharField(max_length=64, blank=True)
    worker = models.ForeignKey(
        "interactive.InferenceWorker",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="assigned_sessions",
    )
    created = models.DateTimeField(auto_now_add=True)
    last_activity = models.DateTimeField(auto_now_add=True)
    closed = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["segment", "user", "closed"])]

    def __str__(self) -> str:
        return f"session {self.id} on segment {self.segment_id}"


class PromptEvent(models.Model):
    """One accepted action of an interactive session, in order: a prompt, an initial mask, undo or reset."""

    class Kind(models.TextChoices):
        POINT = "point"
        BOX = "box"
        SCRIBBLE = "scribble"
        LASSO = "lasso"
        INITIAL_MASK = "initial_mask"
        UNDO = "undo"
        RESET = "reset"

    class Status(models.TextChoices):
        PENDING = "pending"  # recorded, not yet answered by a worker
        APPLIED = "applied"
        REJECTED = "rejected"  # the engine refused it (e.g. nothing to undo): replays skip it

    session = models.ForeignKey(InteractiveSession, on_delete=models.CASCADE, related_name="events")
    sequence = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    payload = models.JSONField(default=dict, help_text="The prompt as the client sent it, in voxel indices.")
    mask = models.BinaryField(null=True, blank=True, help_text="An initial mask: the protocol's mask frame.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    model_name = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["session", "sequence"]
        constraints = [models.UniqueConstraint(fields=["session", "sequence"], name="unique_event_sequence")]

    def __str__(self) -> str:
        return f"{self.kind} #{self.sequence} of {self.session_id}"


class SegmentationVersion(models.Model):
    """One saved state of a segmentation: a DICOM SEG instance in the study database. Immutable."""

    segmentation = models.ForeignKey(Segmentation, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField(help_text="1, 2, … in the order of saving.")
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    restored_from = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    instance = models.ForeignKey(Instance, on_delete=models.PROTECT, related_name="segmentation_versions")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True)
    created = models.DateTimeField(auto_now_add=True)
    description = models.CharField(max_length=256, blank=True)
    # The segments as saved, each {number, label, color, category, type, tracking_id, tracking_uid,
    # algorithm: {type, name, version}, layer, voxels}.
    segments = models.JSONField(default=list)
    layer_count = models.PositiveSmallIntegerField(default=1)
    changed_voxels = models.JSONField(
        default=dict, help_text="Voxels that differ from the parent version, per segment number."
    )

    class Meta:
        ordering = ["segmentation", "number"]
        constraints = [
            models.UniqueConstraint(fields=["segmentation", "number"], name="unique_version_number"),
        ]

    def __str__(self) -> str:
        return f"version {self.number} of {self.segmentation}"
