from django.urls import path

from . import api

urlpatterns = [
    path("me/", api.CurrentUser.as_view(), name="api-me"),
    path("studies/", api.StudyList.as_view(), name="api-studies"),
    path("studies/import/", api.StudyImport.as_view(), name="api-studies-import"),
]
