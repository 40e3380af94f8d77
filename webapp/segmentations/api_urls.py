from django.urls import path

from . import api

urlpatterns = [
    path(
        "series/<str:series_uid>/segmentations/",
        api.SeriesSegmentations.as_view(),
        name="api-series-segmentations",
    ),
    path(
        "series/<str:series_uid>/seg-instances/",
        api.SeriesSegInstances.as_view(),
        name="api-series-seg-instances",
    ),
    path("segmentations/<int:pk>/", api.SegmentationDetail.as_view(), name="api-segmentation"),
    path("segmentations/<int:pk>/draft/", api.SegmentationDraft.as_view(), name="api-segmentation-draft"),
    path("segmentations/<int:pk>/segments/", api.SegmentList.as_view(), name="api-segments"),
    path("segmentations/<int:pk>/segments/<int:number>/", api.SegmentDetail.as_view(), name="api-segment"),
    path("segmentations/<int:pk>/versions/", api.VersionList.as_view(), name="api-versions"),
    path("segmentations/<int:pk>/versions/<int:number>/", api.VersionDetail.as_view(), name="api-version"),
    path(
        "segmentations/<int:pk>/versions/<int:number>/labelmap/",
        api.VersionLabelmap.as_view(),
        name="api-version-labelmap",
    ),
    path(
        "segmentations/<int:pk>/versions/<int:number>/seg/", api.VersionSeg.as_view(), name="api-version-seg"
    ),
    path(
        "segmentations/<int:pk>/versions/<int:number>/nifti/",
        api.VersionNifti.as_view(),
        name="api-version-nifti",
    ),
    path(
        "segmentations/<int:pk>/versions/<int:number>/restore/",
        api.VersionRestore.as_view(),
        name="api-version-restore",
    ),
]
