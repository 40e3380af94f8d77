"""DICOMweb routes (PS3.18 resources), included at ``/dicomweb/``; a trailing slash is tolerated."""

from django.urls import URLPattern, re_path

from . import views

app_name = "dicomweb"

STUDY = "studies/(?P<study>[^/]+)"
SERIES = STUDY + "/series/(?P<series>[^/]+)"
INSTANCE = SERIES + "/instances/(?P<sop>[^/]+)"
FRAMES = INSTANCE + "/frames/(?P<frames>[^/]+)"


def _route(pattern: str, view, name: str) -> URLPattern:  # type: ignore[no-untyped-def]
    return re_path(rf"^{pattern}/?$", view, name=name)


urlpatterns = [
    _route("studies", views.studies, "studies"),
    _route("series", views.series_search, "series-search"),
    _route("instances", views.instance_search, "instance-search"),
    _route(STUDY, views.study, "study"),
    _route(STUDY + "/metadata", views.study_metadata, "study-metadata"),
    _route(STUDY + "/series", views.series_search, "study-series-search"),
    _route(STUDY + "/instances", views.instance_search, "study-instance-search"),
    _route(SERIES, views.series, "series"),
    _route(SERIES + "/metadata", views.series_metadata, "series-metadata"),
    _route(SERIES + "/instances", views.instance_search, "series-instance-search"),
    _route(INSTANCE, views.instance, "instance"),
    _route(INSTANCE + "/metadata", views.instance_metadata, "instance-metadata"),
    _route(INSTANCE + "/rendered", views.rendered, "instance-rendered"),
    _route(INSTANCE + "/bulkdata/(?P<tag>[0-9A-Fa-f]{8})", views.bulkdata, "bulkdata"),
    _route(FRAMES, views.frames, "frames"),
    _route(FRAMES + "/rendered", views.rendered, "frame-rendered"),
]
