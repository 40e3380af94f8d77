"""REST API of the study database: the study list and the web upload.

Authentication is a session (with CSRF) or ``Authorization: Bearer TOKEN``; see the REST_FRAMEWORK setting.
"""

import datetime as dt
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFilesSent
from django.db.models import Count, F, Prefetch, Q, QuerySet
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .access import can_view_studies
from .importing import ALREADY_PRESENT, REJECTED, STORED, count_outcomes, import_uploads
from .models import Series, Study
from .serializers import ImportRequestSerializer, ImportResultSerializer, StudySerializer


def study_queryset(
    search: str = "", modality: str = "", date_from: dt.date | None = None, date_to: dt.date | None = None
) -> QuerySet[Study]:
    """Studies with their counts, newest first. Every word of ``search`` must match the patient's name or ID,
    the description, the accession number or the Study Instance UID; ``date_from``/``date_to`` bound the
    study date (inclusive)."""
    studies = Study.objects.select_related("patient")
    for word in search.split():
        studies = studies.filter(
            Q(patient__patient_name__icontains=word)
            | Q(patient__patient_id__icontains=word)
            | Q(study_description__icontains=word)
            | Q(accession_number__icontains=word)
            | Q(study_instance_uid__startswith=word)
        )
    if modality:
        studies = studies.filter(series__modality__iexact=modality).distinct()
    if date_from:
        studies = studies.filter(study_date__gte=date_from)
    if date_to:
        studies = studies.filter(study_date__lte=date_to)
    return (
        studies.annotate(
            series_count=Count("series", distinct=True),
            instance_count=Count("series__instances", distinct=True),
        )
        .prefetch_related(Prefetch("series", queryset=Series.objects.only("id", "study_id", "modality")))
        .order_by(F("study_date").desc(nulls_last=True), "-created", "-id")
    )


class StudyPagination(LimitOffsetPagination):
    default_limit = 100
    max_limit = 1000


@extend_schema(
    parameters=[
        OpenApiParameter(
            "search", str, description="Words matched against patient, description, accession, UID."
        ),
        OpenApiParameter(
            "modality", str, description="Only studies with a series of this modality, e.g. CT."
        ),
        OpenApiParameter("date_from", OpenApiTypes.DATE, description="Studies on or after this date."),
        OpenApiParameter("date_to", OpenApiTypes.DATE, description="Studies on or before this date."),
    ]
)
class StudyList(generics.ListAPIView):
    """The studies in the database, for the study browser."""

    serializer_class = StudySerializer
    pagination_class = StudyPagination

    def get_queryset(self) -> QuerySet[Study]:
        params = self.request.query_params
        return study_queryset(
            params.get("search", ""),
            params.get("modality", ""),
            _date_param(params, "date_from"),
            _date_param(params, "date_to"),
        )


def _date_param(params: Any, name: str) -> dt.date | None:
    value = params.get(name, "")
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValidationError({name: f"not a date (YYYY-MM-DD): {value!r}"}) from None


class StudyImport(APIView):
    """Upload DICOM files, a folder (as files with relative paths) or zip archives.

    Answers 200 with one outcome per file (stored, already present or rejected with a reason) and the counts,
    also when some files were rejected.
    """

    parser_classes = [MultiPartParser]

    @extend_schema(
        request={"multipart/form-data": ImportRequestSerializer},
        responses={200: ImportResultSerializer, 400: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request) -> Response:
        try:
            files = request.FILES.getlist("files")
            paths = request.POST.getlist("paths")
        except TooManyFilesSent:
            limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
            return _bad_request(f"too many files in one request: send at most {limit} at a time")
        except RequestDataTooBig as exc:
            return _bad_request(str(exc))
        if not files:
            return _bad_request("no files: send them as multipart form data in the field 'files'")
        outcomes = import_uploads(files, paths)
        counts = count_outcomes(outcomes)
        return Response(
            {
                "outcomes": [outcome.as_dict() for outcome in outcomes],
                "counts": {
                    "stored": counts[STORED],
                    "already_present": counts[ALREADY_PRESENT],
                    "rejected": counts[REJECTED],
                },
            }
        )


def _bad_request(detail: str) -> Response:
    return Response({"detail": detail}, status=status.HTTP_400_BAD_REQUEST)


@method_decorator(ensure_csrf_cookie, name="dispatch")
class CurrentUser(APIView):
    """The signed-in user, and whether they may see the study database. Also sets the CSRF cookie that the
    page sends back on uploads."""

    permission_classes = [IsAuthenticated]  # also for users without study access: the page says why

    @extend_schema(
        responses=inline_serializer(
            "CurrentUser",
            {
                "username": serializers.CharField(),
                "full_name": serializers.CharField(),
                "is_staff": serializers.BooleanField(),
                "can_view_studies": serializers.BooleanField(),
            },
        )
    )
    def get(self, request: Request) -> Response:
        user: Any = request.user
        return Response(
            {
                "username": user.get_username(),
                "full_name": user.get_full_name(),
                "is_staff": user.is_staff,
                "can_view_studies": can_view_studies(user),
            }
        )
