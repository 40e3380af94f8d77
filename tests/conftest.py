"""Shared fixtures. Tests read real data in place from ../shared/data."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def require(available: bool, reason: str) -> None:
    """Skip a test whose service or tool is missing, or fail it in CI (ANNOVOX_REQUIRE_SERVICES=1)."""
    if available:
        return
    if os.environ.get("ANNOVOX_REQUIRE_SERVICES") == "1":
        pytest.fail(f"required in CI but missing: {reason}")
    pytest.skip(reason)


def study_reader(username: str, password: str | None = None):  # type: ignore[no-untyped-def]
    """A user with the permission to see the study database (webapp.studies.access)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user(username, password=password)
    user.user_permissions.add(
        Permission.objects.get(codename="view_series", content_type__app_label="studies")
    )
    return get_user_model().objects.get(pk=user.pk)  # fresh: permissions are cached per object


@pytest.fixture
def shared_data() -> Path:
    require(DATA.is_dir(), f"the shared data folder {DATA} is missing")
    return DATA


@pytest.fixture(autouse=True)
def isolated_storage(settings, tmp_path):
    """Every test stores files in its own folder."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "files")},
        },
    }
    return tmp_path / "files"
