"""Saving, loading, restoring, importing and exporting segmentation versions (service functions, no views).

Every save encodes the whole labelmap as a new DICOM SEG instance, stores it in the study database (so QIDO
and WADO serve it) and adds a :class:`SegmentationVersion` pointing at it; nothing already saved changes.
The SEG is the record: fetching a version decodes its SEG onto the source series' grid.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Max
from pydicom.uid import generate_uid

from webapp.interactive.protocol import ProtocolError, decode_frame
from webapp.studies.importing import STORED, store_dicom
from webapp.studies.models import Instance, Series
from webapp.studies.volume import Volume, VolumeError, build_volume, read_instance

from .dicom_seg import Code, Labelmap, SegError, SegmentInfo, pack_layers
from .dicom_seg.reader import read_seg, referenced_series_uids
from .dicom_seg.writer import seg_bytes, write_seg
from .models import Draft, InteractiveSession, PromptEvent, Segment, Segmentation, SegmentationVersion
from .services import draft_is_newer

SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
AI_PROMPTS = (PromptEvent.Kind.POINT, PromptEvent.Kind.BOX, PromptEvent.Kind.SCRIBBLE, PromptEvent.Kind.LASSO)
MANUAL = {"type": "MANUAL"}


class VersionError(Exception):
    """A request that cannot be carried out; the message is for the user, ``status`` the HTTP status."""

    status = 400


class ConflictError(VersionError):
    status = 409


class UnprocessableError(VersionError):
    """Well-formed, but the data cannot be used (a SEG that cannot be placed, a series without a grid)."""

    status = 422


# --- segmentations and segments ------------------------------------------------------------------


def create_segmentation(
    series: Series,
    user: AbstractBaseUser,
    *,
    label: str,
    description: str = "",
    segments: list[dict[str, Any]] | None = None,
) -> Segmentation:
    with transaction.atomic():
        segmentation = Segmentation.objects.create(
            series=series, label=label, description=description, created_by=user
        )
        for fields in segments or []:
            add_segment(segmentation, **fields)
    return segmentation


def add_segment(segmentation: Segmentation, **fields: Any) -> Segment:
    """A new segment with the next number: DICOM SEG numbers segments 1, 2, 3, … without gaps."""
    with transaction.atomic():
        Segmentation.objects.select_for_update().filter(pk=segmentation.pk).first()
        last = segmentation.segments.aggregate(last=Max("number"))["last"] or 0
        return Segment.objects.create(segmentation=segmentation, number=last + 1, **fields)


# --- versions ------------------------------------------------------------------------------------


def grid_shape(series: Series) -> tuple[int, int, int]:
    """(k, j, i) of the series' voxel grid, which every labelmap of its segmentations must have."""
    return _volume(series).array.shape  # type: ignore[return-value]


def latest_version(segmentation: Segmentation) -> SegmentationVersion | None:
    return segmentation.versions.order_by("-number").first()


def save_version(
    segmentation: Segmentation,
    layers: np.ndarray,
    user: AbstractBaseUser,
    *,
    description: str = "",
    parent: int | None = None,
    restored_from: SegmentationVersion | None = None,
) -> SegmentationVersion:
    """Encode ``layers`` (``[layer, k, j, i]`` of segment numbers) as the next version.

    ``parent``: the version number the client started from; if another save came in between, nothing is
    saved and :class:`ConflictError` says so. A failed encode stores nothing and leaves every earlier version
    as it was.
    """
    volume = _volume(segmentation.series)
    if tuple(layers.shape[1:]) != volume.array.shape:
        raise VersionError(
            f"the labelmap is {list(layers.shape[1:])} voxels; the series' grid is {list(volume.array.shape)}"
        )
    segments = {segment.number: segment for segment in segmentation.segments.all()}
    layer_of = _layer_of_each_segment(layers)
    unknown = sorted(set(layer_of) - set(segments))
    if unknown:
        raise VersionError(f"the labelmap contains segment numbers that are not defined: {unknown}")

    for _ in range(3):  # a concurrent save without a parent: encode again on top of it
        previous = latest_version(segmentation)
        if parent is not None and (previous.number if previous else 0) != parent:
            raise ConflictError(
                f"version {previous.number if previous else 0} was saved after version {parent}: "
                "load it and save again"
            )
        changed = changed_voxels(layers, load_version(previous).layers if previous else None)
        algorithms = {
            number: _algorithm(segment, changed.get(number, 0)) for number, segment in segments.items()
        }
        number = (previous.number if previous else 0) + 1
        infos = [_segment_info(segment, algorithms[n]) for n, segment in sorted(segments.items())]
        data = _encode(segmentation, number, Labelmap(layers, infos), volume, user)
        try:
            version = _store_version(
                segmentation,
                number,
                data,
                user,
                description,
                previous,
                restored_from,
                layers,
                layer_of,
                changed,
            )
        except IntegrityError:
            continue
        for n, segment in segments.items():
            if segment.algorithm != algorithms[n]:
                segment.algorithm = algorithms[n]
                segment.save(update_fields=["algorithm"])
        return version
    raise ConflictError("other saves of this segmentation keep coming in: try again")


def load_version(version: SegmentationVersion) -> Labelmap:
    """The version's SEG, decoded onto the source series' grid."""
    try:
        dataset = read_instance(version.instance)
    except VolumeError as exc:
        raise UnprocessableError(str(exc)) from exc
    return _read_seg(dataset, _volume(version.segmentation.series))


def working_labelmap(
    segmentation: Segmentation,
) -> tuple[Labelmap, SegmentationVersion | None, list[int]]:
    """What the annotator sees after a reload: the latest version (an empty labelmap when nothing is saved
    yet) with each segment whose draft is newer than that version replaced, whole, by the draft's mask.

    Returns the labelmap (the layer rules of a version's: each segment whole on one layer, overlapping
    segments on separate layers), the version it starts from, and the numbers of the segments taken from
    drafts. Drafts are written by the interactive workers (docs/protocol.md, "Nothing is lost").
    """
    volume = _volume(segmentation.series)
    shape: tuple[int, int, int] = volume.array.shape  # type: ignore[assignment]
    base = latest_version(segmentation)
    saved = base.created if base is not None else None
    drafts = [
        draft
        for draft in Draft.objects.filter(segment__segmentation=segmentation).select_related("segment")
        if draft_is_newer(draft, saved)
    ]
    infos = [
        _segment_info(segment, segment.algorithm or dict(MANUAL))
        for segment in segmentation.segments.order_by("number")
    ]
    layers = load_version(base).layers if base is not None else np.zeros((1, *shape), dtype=np.uint8)
    # A draft that only repeats the saved mask (a session opened on a saved segment starts from it) is no
    # unsaved work.
    masks = {}
    for draft in sorted(drafts, key=lambda draft: draft.segment.number):
        mask = _draft_mask(draft, shape)
        if not np.array_equal(mask, (layers == draft.segment.number).any(axis=0)):
            masks[draft.segment.number] = mask
    if not masks:
        return Labelmap(layers, infos), base, []

    numbers = list(masks)
    layers[np.isin(layers, numbers)] = 0  # a drafted segment comes from its draft only
    kept = [layer for layer in layers if layer.any()] or [layers[0]]
    return Labelmap(pack_layers(masks, into=np.stack(kept)), infos), base, numbers


def _draft_mask(draft: Draft, shape: tuple[int, int, int]) -> np.ndarray:
    """The draft's mask on the whole grid (its frame is a REPLACE frame over the mask's bounding box)."""
    mask = np.zeros(shape, dtype=bool)
    if draft.empty:
        return mask
    if list(draft.shape) != list(shape):
        raise UnprocessableError(
            f"the draft of segment {draft.segment.number} is on a {draft.shape} grid; the series' grid is "
            f"{list(shape)}"
        )
    try:
        frame = decode_frame(bytes(draft.frame), shape)
    except ProtocolError as exc:
        number = draft.segment.number
        raise UnprocessableError(f"the draft of segment {number} cannot be read: {exc}") from exc
    (k0, j0, i0), (k1, j1, i1) = frame.start, frame.stop
    mask[k0:k1, j0:j1, i0:i1] = frame.mask
    return mask


def restore_version(version: SegmentationVersion, user: AbstractBaseUser) -> SegmentationVersion:
    """A new version with the content and segment descriptions of ``version``."""
    labelmap = load_version(version)
    segmentation = version.segmentation
    with transaction.atomic():
        for saved in version.segments:
            Segment.objects.update_or_create(
                segmentation=segmentation,
                number=saved["number"],
                defaults={key: saved[key] for key in ("label", "color", "category", "type", "tracking_id")},
            )
        return save_version(
            segmentation,
            labelmap.layers,
            user,
            description=f"restored version {version.number}",
            restored_from=version,
        )


def changed_voxels(new: np.ndarray, old: np.ndarray | None) -> dict[int, int]:
    """Per segment number, the voxels that are in the segment in one labelmap and not in the other."""
    if old is None:
        return _voxel_counts(new)
    if new.shape[0] == 1 and old.shape[0] == 1:
        # Each differing voxel left one segment and joined another (0 = background).
        differ = new[0] != old[0]
        counts = np.bincount(new[0][differ], minlength=1)[1:]
        lost = np.bincount(old[0][differ], minlength=1)[1:]
        size = max(len(counts), len(lost))
        total = np.pad(counts, (0, size - len(counts))) + np.pad(lost, (0, size - len(lost)))
        return {int(n) + 1: int(c) for n, c in enumerate(total) if c}
    numbers = set(_layer_of_each_segment(new)) | set(_layer_of_each_segment(old))
    changed = {n: int(np.count_nonzero((new == n).any(axis=0) != (old == n).any(axis=0))) for n in numbers}
    return {n: c for n, c in changed.items() if c}


# --- SEGs in the study database ------------------------------------------------------------------


def seg_instances_of(series: Series) -> list[Instance]:
    """SEG instances stored in the series' study that refer to the series."""
    candidates = Instance.objects.filter(series__study_id=series.study_id, sop_class_uid__in=SEG_SOP_CLASSES)
    return [
        instance
        for instance in candidates.select_related("series").order_by("pk")
        if series.series_instance_uid in _referenced_series_in_metadata(instance.metadata)
    ]


def import_seg(series: Series, instance: Instance, user: AbstractBaseUser) -> Segmentation:
    """A segmentation whose version 1 is an existing SEG of the study database (not copied or re-encoded):
    its segments, their codes and how they were made come from the SEG."""
    if instance.sop_class_uid not in SEG_SOP_CLASSES:
        raise VersionError(f"instance {instance.sop_instance_uid} is not a DICOM SEG")
    try:
        dataset = read_instance(instance)
    except VolumeError as exc:
        raise UnprocessableError(str(exc)) from exc
    if series.series_instance_uid not in referenced_series_uids(dataset):
        raise UnprocessableError(
            f"SEG {instance.sop_instance_uid} does not refer to series {series.series_instance_uid}"
        )
    labelmap = _read_seg(dataset, _volume(series))
    layer_of = _layer_of_each_segment(labelmap.layers)
    counts = _voxel_counts(labelmap.layers)
    with transaction.atomic():
        segmentation = Segmentation.objects.create(
            series=series,
            label=str(dataset.get("ContentLabel", "") or "SEG")[:64],
            description=str(dataset.get("ContentDescription", "") or "")[:256],
            created_by=user,
        )
        for info in labelmap.segments:
            Segment.objects.create(
                segmentation=segmentation,
                number=info.number,
                label=info.label[:64],
                color=info.color,
                category=_code_dict(info.category),
                type=_code_dict(info.type),
                tracking_id=info.tracking_id[:64],
                tracking_uid=info.tracking_uid or str(generate_uid()),
                algorithm=_algorithm_of(info),
            )
        SegmentationVersion.objects.create(
            segmentation=segmentation,
            number=1,
            instance=instance,
            created_by=user,
            description=f"loaded from SEG {instance.sop_instance_uid}",
            segments=_snapshot(segmentation, layer_of, counts),
            layer_count=labelmap.layers.shape[0],
            changed_voxels={str(n): c for n, c in counts.items()},
        )
    return segmentation


# --- export --------------------------------------------------------------------------------------


def nifti_export(version: SegmentationVersion) -> bytes:
    """A zip with the labelmap as NIfTI (one file per layer when segments overlap) and ``labels.json``."""
    labelmap = load_version(version)
    volume = _volume(version.segmentation.series)
    # NIfTI is RAS and (i, j, k); our grid is LPS and [k, j, i] (docs/volumes.md).
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine()
    count = labelmap.layers.shape[0]
    names = ["labelmap.nii.gz"] if count == 1 else [f"labelmap_layer{n + 1}.nii.gz" for n in range(count)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # .nii.gz is compressed already
        for name, layer in zip(names, labelmap.layers, strict=True):
            image = nib.Nifti1Image(np.ascontiguousarray(layer.transpose(2, 1, 0)), affine)
            image.set_qform(affine, code=1)
            image.set_sform(affine, code=1)
            archive.writestr(name, gzip.compress(image.to_bytes(), compresslevel=6))
        labels = {
            "segmentation": version.segmentation.label,
            "version": version.number,
            "series_instance_uid": version.segmentation.series.series_instance_uid,
            "files": names,
            "segments": [{**saved, "file": names[saved["layer"]]} for saved in version.segments],
        }
        archive.writestr("labels.json", json.dumps(labels, indent=2), compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


# --- helpers -------------------------------------------------------------------------------------


def _volume(series: Series) -> Volume:
    try:
        return build_volume(series)
    except VolumeError as exc:
        raise UnprocessableError(f"series {series.series_instance_uid} has no voxel grid: {exc}") from exc


def _read_seg(dataset: pydicom.Dataset, volume: Volume) -> Labelmap:
    try:
        return read_seg(dataset, volume)
    except SegError as exc:
        raise UnprocessableError(str(exc)) from exc


def _layer_of_each_segment(layers: np.ndarray) -> dict[int, int]:
    layer_of: dict[int, int] = {}
    for index, layer in enumerate(layers):
        present = np.flatnonzero(np.bincount(layer.ravel()))
        for number in present[present > 0]:
            if int(number) in layer_of:
                raise VersionError(f"segment {number} is on more than one layer of the labelmap")
            layer_of[int(number)] = index
    return layer_of


def _voxel_counts(layers: np.ndarray) -> dict[int, int]:
    counts: dict[int, int] = {}
    for layer in layers:
        for number, count in enumerate(np.bincount(layer.ravel())):
            if number and count:
                counts[number] = counts.get(number, 0) + int(count)
    return counts


def _algorithm(segment: Segment, changed: int) -> dict[str, str]:
    """How the segment was made: SEMIAUTOMATIC with the model when AI prompts contributed; an automatic
    segment from a loaded SEG that someone edited becomes SEMIAUTOMATIC; MANUAL otherwise."""
    session = (
        InteractiveSession.objects.filter(
            segment=segment, events__kind__in=AI_PROMPTS, events__status=PromptEvent.Status.APPLIED
        )
        .order_by("-last_activity")
        .first()
    )
    if session is not None:
        return {"type": "SEMIAUTOMATIC", "name": session.model_name, "version": session.model_version}
    if segment.algorithm.get("type") == "AUTOMATIC" and changed:
        return {**segment.algorithm, "type": "SEMIAUTOMATIC"}
    return dict(segment.algorithm) or dict(MANUAL)


def _algorithm_of(info: SegmentInfo) -> dict[str, str]:
    if info.algorithm_type == "MANUAL":
        return dict(MANUAL)
    return {"type": info.algorithm_type, "name": info.algorithm_name, "version": info.algorithm_version}


def _code(value: dict[str, str]) -> Code:
    return Code(value=value["value"], scheme=value["scheme"], meaning=value["meaning"])


def _code_dict(code: Code) -> dict[str, str]:
    return {"value": code.value, "scheme": code.scheme, "meaning": code.meaning}


def _segment_info(segment: Segment, algorithm: dict[str, str]) -> SegmentInfo:
    return SegmentInfo(
        number=segment.number,
        label=segment.label,
        color=segment.color,
        category=_code(segment.category),
        type=_code(segment.type),
        tracking_id=segment.tracking_id or segment.label,
        tracking_uid=segment.tracking_uid,
        algorithm_type=algorithm["type"],
        algorithm_name=algorithm.get("name", ""),
        # DICOM needs a version for every named algorithm; SEGs from other tools sometimes have none.
        algorithm_version=algorithm.get("version", "")
        or ("" if algorithm["type"] == "MANUAL" else "unknown"),
    )


def _snapshot(segmentation: Segmentation, layer_of: dict[int, int], counts: dict[int, int]) -> list[dict]:
    return [
        {
            "number": segment.number,
            "label": segment.label,
            "color": segment.color,
            "category": segment.category,
            "type": segment.type,
            "tracking_id": segment.tracking_id,
            "tracking_uid": segment.tracking_uid,
            "algorithm": segment.algorithm or dict(MANUAL),
            "layer": layer_of.get(segment.number, 0),
            "voxels": counts.get(segment.number, 0),
        }
        for segment in segmentation.segments.order_by("number")
    ]


def _content_label(label: str) -> str:
    # ContentLabel is a Code String: A-Z, 0-9, space and underscore, at most 16, starting with a letter
    # and not ending with space or underscore (as highdicom checks).
    cleaned = re.sub(r"[^A-Z0-9_ ]+", "_", label.upper()).strip(" _")
    if not cleaned[:1].isalpha():
        cleaned = f"SEG {cleaned}"
    return cleaned[:16].rstrip(" _")


def _person_name(user: AbstractBaseUser) -> str:
    first, last = getattr(user, "first_name", ""), getattr(user, "last_name", "")
    return f"{last}^{first}" if last or first else user.get_username()


def _seg_series_number(segmentation: Segmentation) -> int:
    existing = Series.objects.filter(series_instance_uid=segmentation.seg_series_instance_uid).first()
    if existing is not None and existing.series_number is not None:
        return existing.series_number
    highest = Series.objects.filter(study_id=segmentation.series.study_id).aggregate(n=Max("series_number"))
    return (highest["n"] or 0) + 1


def _encode(
    segmentation: Segmentation, number: int, labelmap: Labelmap, volume: Volume, user: AbstractBaseUser
) -> bytes:
    series = segmentation.series
    sources = [read_instance(instance, header_only=True) for instance in series.instances.order_by("pk")]
    try:
        dataset = write_seg(
            labelmap,
            volume,
            sources,
            series_instance_uid=segmentation.seg_series_instance_uid,
            sop_instance_uid=str(generate_uid()),
            series_number=_seg_series_number(segmentation),
            instance_number=number,
            content_label=_content_label(segmentation.label),
            content_description=(segmentation.description or segmentation.label)[:64],
            content_creator=_person_name(user),
            series_description=f"{segmentation.label} (Annovox)"[:64],
        )
    except SegError as exc:
        raise UnprocessableError(f"the SEG could not be encoded: {exc}") from exc
    return seg_bytes(dataset)


def _store_version(
    segmentation: Segmentation,
    number: int,
    data: bytes,
    user: AbstractBaseUser,
    description: str,
    previous: SegmentationVersion | None,
    restored_from: SegmentationVersion | None,
    layers: np.ndarray,
    layer_of: dict[int, int],
    changed: dict[int, int],
) -> SegmentationVersion:
    """Store the SEG and its version row together: if either fails, neither exists afterwards."""
    stored: Instance | None = None
    try:
        with transaction.atomic():
            outcome = store_dicom(data, f"version {number} of segmentation {segmentation.pk}")
            if outcome.status != STORED:
                raise UnprocessableError(f"the SEG could not be stored: {outcome.reason}")
            stored = Instance.objects.get(sop_instance_uid=outcome.sop_instance_uid)
            return SegmentationVersion.objects.create(
                segmentation=segmentation,
                number=number,
                parent=previous,
                restored_from=restored_from,
                instance=stored,
                created_by=user,
                description=description[:256],
                segments=_snapshot(segmentation, layer_of, _voxel_counts(layers)),
                layer_count=layers.shape[0],
                changed_voxels={str(n): c for n, c in sorted(changed.items())},
            )
    except BaseException:
        if stored is not None:  # its row was rolled back with the version; the file must go too
            default_storage.delete(stored.file)
        raise


def _referenced_series_in_metadata(metadata: dict[str, Any]) -> set[str]:
    """Series UIDs of ReferencedSeriesSequence (0008,1115) in an instance's DICOM JSON."""
    uids = set()
    for item in metadata.get("00081115", {}).get("Value", []):
        uids.update(item.get("0020000E", {}).get("Value", []))
    return uids
