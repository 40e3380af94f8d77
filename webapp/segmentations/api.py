"""REST API of segmentations: segmentations of a series, their segments, versions, exports, and the working
labelmap (the latest version with the interactive drafts made since).

Thin views over :mod:`webapp.segmentations.versions`; the labelmap format is in
:mod:`webapp.segmentations.labelmap_io`. Access follows the study database's rule (CanViewStudies).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.files.storage import default_storage
from django.db.models import Prefetch, QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.interactive.drafts import bring_drafts_up_to_date
from webapp.studies.models import Instance, Series

from . import versions
from .labelmap_io import LabelmapFormatError, read_labelmap, write_labelmap
from .models import Segment, Segmentation, SegmentationVersion
from .serializers import (
    SegInstanceSerializer,
    SegmentationCreateSerializer,
    SegmentationSerializer,
    SegmentSerializer,
    VersionCreateSerializer,
    VersionSerializer,
)

MAX_LAYERS = 8
# Response headers of the working labelmap (SegmentationDraft); settings.CORS_EXPOSE_HEADERS lists them.
BASE_VERSION_HEADER = "X-Annovox-Base-Version"
DRAFT_SEGMENTS_HEADER = "X-Annovox-Draft-Segments"


def _segmentations() -> QuerySet[Segmentation]:
    return Segmentation.objects.select_related("series", "created_by").prefetch_related(
        Prefetch("segments", queryset=Segment.objects.order_by("number")),
        Prefetch("versions", queryset=SegmentationVersion.objects.only("id", "segmentation_id", "number")),
    )


def _error(exc: versions.VersionError) -> Response:
    return Response({"detail": str(exc)}, status=exc.status)


def _version(segmentation_id: int, number: int) -> SegmentationVersion:
    return get_object_or_404(
        SegmentationVersion.objects.select_related(
            "segmentation__series", "instance__series", "created_by", "parent", "restored_from"
        ),
        segmentation_id=segmentation_id,
        number=number,
    )


class SeriesSegmentations(APIView):
    """The segmentations of a series; create one, empty or from a SEG stored in the study database."""

    @extend_schema(responses=SegmentationSerializer(many=True))
    def get(self, request: Request, series_uid: str) -> Response:
        series = get_object_or_404(Series, series_instance_uid=series_uid)
        found = _segmentations().filter(series=series).order_by("-created", "-id")
        return Response(SegmentationSerializer(found, many=True).data)

    @extend_schema(
        request=SegmentationCreateSerializer,
        responses={201: SegmentationSerializer, 400: OpenApiTypes.OBJECT, 422: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request, series_uid: str) -> Response:
        series = get_object_or_404(Series, series_instance_uid=series_uid)
        form = SegmentationCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        fields = form.validated_data
        try:
            if "seg_instance" in fields:
                instance = get_object_or_404(Instance, sop_instance_uid=fields["seg_instance"])
                segmentation = versions.import_seg(series, instance, request.user)
            else:
                segmentation = versions.create_segmentation(
                    series,
                    request.user,
                    label=fields["label"],
                    description=fields["description"],
                    segments=fields.get("segments", []),
                )
        except versions.VersionError as exc:
            return _error(exc)
        created = _segmentations().get(pk=segmentation.pk)
        return Response(SegmentationSerializer(created).data, status=status.HTTP_201_CREATED)


class SeriesSegInstances(APIView):
    """SEG instances in the study database that refer to this series (a viewer offers to load them)."""

    @extend_schema(responses=SegInstanceSerializer(many=True))
    def get(self, request: Request, series_uid: str) -> Response:
        series = get_object_or_404(Series, series_instance_uid=series_uid)
        found = versions.seg_instances_of(series)
        owners = dict(
            SegmentationVersion.objects.filter(instance__in=found).values_list(
                "instance_id", "segmentation_id"
            )
        )
        rows = [
            {
                "sop_instance_uid": instance.sop_instance_uid,
                "series_instance_uid": instance.series.series_instance_uid,
                "content_label": _json_value(instance.metadata, "00700080"),
                "content_description": _json_value(instance.metadata, "00700081"),
                "segment_count": len(instance.metadata.get("00620002", {}).get("Value", [])),
                "segmentation": owners.get(instance.pk),
            }
            for instance in found
        ]
        return Response(SegInstanceSerializer(rows, many=True).data)


class SegmentationDetail(APIView):
    @extend_schema(responses=SegmentationSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(SegmentationSerializer(get_object_or_404(_segmentations(), pk=pk)).data)

    @extend_schema(request=SegmentationSerializer, responses=SegmentationSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        segmentation = get_object_or_404(Segmentation, pk=pk)
        form = SegmentationSerializer(segmentation, data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        form.save()
        return Response(SegmentationSerializer(_segmentations().get(pk=pk)).data)


class SegmentList(APIView):
    """Add a segment; it gets the next number."""

    @extend_schema(request=SegmentSerializer, responses={201: SegmentSerializer})
    def post(self, request: Request, pk: int) -> Response:
        segmentation = get_object_or_404(Segmentation, pk=pk)
        form = SegmentSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            segment = versions.add_segment(segmentation, **form.validated_data)
        except versions.VersionError as exc:
            return _error(exc)
        return Response(SegmentSerializer(segment).data, status=status.HTTP_201_CREATED)


class SegmentDetail(APIView):
    """Rename a segment, change its colour or codes; the next saved version carries the change."""

    @extend_schema(request=SegmentSerializer, responses=SegmentSerializer)
    def patch(self, request: Request, pk: int, number: int) -> Response:
        segment = get_object_or_404(Segment, segmentation_id=pk, number=number)
        form = SegmentSerializer(segment, data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        form.save()
        return Response(form.data)


class VersionList(APIView):
    """The saved versions, newest first; POST saves a new one from a labelmap."""

    parser_classes = [MultiPartParser]

    @extend_schema(responses=VersionSerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        segmentation = get_object_or_404(Segmentation, pk=pk)
        found = segmentation.versions.select_related(
            "instance__series", "created_by", "parent", "restored_from"
        ).order_by("-number")
        return Response(VersionSerializer(found, many=True).data)

    @extend_schema(
        request={"multipart/form-data": VersionCreateSerializer},
        responses={
            201: VersionSerializer,
            400: OpenApiTypes.OBJECT,
            409: OpenApiResponse(description="another version was saved after `parent`"),
            422: OpenApiTypes.OBJECT,
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        segmentation = get_object_or_404(Segmentation.objects.select_related("series"), pk=pk)
        form = VersionCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        fields = form.validated_data
        try:
            shape = versions.grid_shape(segmentation.series)
            voxels = shape[0] * shape[1] * shape[2]
            layers = read_labelmap(fields["labelmap"].read(), shape, max_bytes=voxels * 2 * MAX_LAYERS + 4096)
            version = versions.save_version(
                segmentation,
                layers,
                request.user,
                description=fields["description"],
                parent=fields.get("parent"),
            )
        except LabelmapFormatError as exc:
            return Response({"detail": f"labelmap: {exc}"}, status=status.HTTP_400_BAD_REQUEST)
        except versions.VersionError as exc:
            return _error(exc)
        return Response(VersionSerializer(_version(pk, version.number)).data, status=status.HTTP_201_CREATED)


class VersionDetail(APIView):
    @extend_schema(responses=VersionSerializer)
    def get(self, request: Request, pk: int, number: int) -> Response:
        return Response(VersionSerializer(_version(pk, number)).data)


def _labelmap_file(version: SegmentationVersion) -> bytes:
    return write_labelmap(versions.load_version(version).layers)


def _seg_file(version: SegmentationVersion) -> bytes:
    with default_storage.open(version.instance.file, "rb") as file:
        return file.read()


class _VersionFile(APIView):
    """A version as a file download: ``produce`` makes the bytes."""

    produce: Callable[[SegmentationVersion], bytes]
    content_type: str
    extension: str

    def get(self, request: Request, pk: int, number: int) -> HttpResponse:
        version = _version(pk, number)
        try:
            data = self.produce(version)
        except versions.VersionError as exc:
            return _error(exc)
        return _download(data, self.content_type, _name(version, self.extension))


@extend_schema(responses={(200, "application/gzip"): OpenApiTypes.BINARY})
class VersionLabelmap(_VersionFile):
    """The version as a gzip-compressed .npy labelmap ``[layer, k, j, i]`` (see the save request)."""

    produce = staticmethod(_labelmap_file)
    content_type, extension = "application/gzip", "npy.gz"


@extend_schema(responses={(200, "application/dicom"): OpenApiTypes.BINARY})
class VersionSeg(_VersionFile):
    """The version's DICOM SEG file, exactly as stored (also served by WADO-RS)."""

    produce = staticmethod(_seg_file)
    content_type, extension = "application/dicom", "dcm"


@extend_schema(responses={(200, "application/zip"): OpenApiTypes.BINARY})
class VersionNifti(_VersionFile):
    """Export: a zip with the labelmap as NIfTI and labels.json (segment numbers, names, codes, layers)."""

    produce = staticmethod(versions.nifti_export)
    content_type, extension = "application/zip", "nifti.zip"


@extend_schema(
    responses={(200, "application/gzip"): OpenApiTypes.BINARY, 422: OpenApiTypes.OBJECT},
    parameters=[
        OpenApiParameter(
            BASE_VERSION_HEADER,
            str,
            OpenApiParameter.HEADER,
            response=[200],
            description="The latest saved version number the labelmap starts from; empty when none.",
        ),
        OpenApiParameter(
            DRAFT_SEGMENTS_HEADER,
            str,
            OpenApiParameter.HEADER,
            response=[200],
            description="Comma-separated numbers of the segments taken from drafts; empty when none.",
        ),
    ],
)
class SegmentationDraft(APIView):
    """The working labelmap, to resume unsaved work after a reload: the latest version (empty when none) with
    each segment whose interactive draft is newer replaced by the draft, as a gzip-compressed .npy
    ``[layer, k, j, i]`` like a version's labelmap."""

    def get(self, request: Request, pk: int) -> HttpResponse:
        segmentation = get_object_or_404(Segmentation.objects.select_related("series"), pk=pk)
        bring_drafts_up_to_date(segmentation.pk)  # a reload right after an edit must find it
        try:
            labelmap, base, drafted = versions.working_labelmap(segmentation)
        except versions.VersionError as exc:
            return _error(exc)
        response = _download(
            write_labelmap(labelmap.layers), "application/gzip", f"{_stem(segmentation)}_draft.npy.gz"
        )
        response[BASE_VERSION_HEADER] = str(base.number) if base is not None else ""
        response[DRAFT_SEGMENTS_HEADER] = ",".join(str(number) for number in drafted)
        return response


class VersionRestore(APIView):
    """Save the content of this version again, as the newest version."""

    @extend_schema(request=None, responses={201: VersionSerializer})
    def post(self, request: Request, pk: int, number: int) -> Response:
        version = _version(pk, number)
        try:
            restored = versions.restore_version(version, request.user)
        except versions.VersionError as exc:
            return _error(exc)
        return Response(VersionSerializer(_version(pk, restored.number)).data, status=status.HTTP_201_CREATED)


def _download(data: bytes, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(data, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _stem(segmentation: Segmentation) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in segmentation.label) or "segmentation"


def _name(version: SegmentationVersion, extension: str) -> str:
    return f"{_stem(version.segmentation)}_v{version.number}.{extension}"


def _json_value(metadata: dict[str, Any], tag: str) -> str:
    values = metadata.get(tag, {}).get("Value", [])
    return str(values[0]) if values else ""
