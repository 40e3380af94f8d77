"""Who may see what in the study database: one rule for DICOMweb, the REST API and the interactive service."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from rest_framework.permissions import BasePermission

from .models import Series

VIEW_PERMISSION = "studies.view_series"


def can_view_studies(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Active users with the ``studies.view_series`` permission (superusers have every permission)."""
    return bool(user.is_authenticated and user.is_active and user.has_perm(VIEW_PERMISSION))


def can_view_series(user: AbstractBaseUser | AnonymousUser, series: Series) -> bool:
    # Per-study grants will come with projects; until then the permission covers the whole database.
    return can_view_studies(user)


class CanViewStudies(BasePermission):
    """The REST API's side of the same rule."""

    message = f"This account may not see the study database (permission {VIEW_PERMISSION})."

    def has_permission(self, request: Any, view: Any) -> bool:
        return can_view_studies(request.user)
