"""DICOM JSON (PS3.18 F.2) helpers: reading stored ``Instance.metadata`` in the database and in Python."""

from __future__ import annotations

import re
from typing import Any

from django.db import models
from django.db.models.expressions import Func
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

TAG_PATTERN = re.compile(r"^[0-9A-Fa-f]{8}$")
BULK_URI = re.compile(r'"BulkDataURI":\s*"bulkdata/')


class JsonMember(Func):
    """One top-level member of a JSON column, computed by the database.

    Django's key transforms read a digit-only key such as a DICOM tag (``00100010``) as an array index, so the
    member is addressed explicitly here. The tag is checked to be 8 hex digits before it is put into SQL.
    """

    output_field = models.JSONField()

    def __init__(self, column: str, tag: str) -> None:
        if not TAG_PATTERN.match(tag):
            raise ValueError(f"not a DICOM tag: {tag!r}")
        self.tag = tag.upper()
        super().__init__(models.F(column))

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> Any:  # type: ignore[override]
        if connection.vendor == "postgresql":
            template = f"(%(expressions)s -> '{self.tag}')"
        else:  # SQLite and MySQL share JSON_EXTRACT with a quoted member path
            template = f"JSON_EXTRACT(%(expressions)s, '$.\"{self.tag}\"')"
        return super().as_sql(compiler, connection, template=template, **extra)


def tag_of(name: str) -> str | None:
    """``00100020`` for ``PatientID`` or ``00100020`` (any case); None for an unknown name."""
    if TAG_PATTERN.match(name):
        return name.upper()
    tag = tag_for_keyword(name)
    return None if tag is None else f"{tag:08X}"


def vr_of(tag: str) -> str:
    try:
        return str(dictionary_VR(int(tag, 16))).split(" ")[0]  # "US or SS" → the first
    except KeyError:
        return "UN"


def keyword_of(tag: str) -> str:
    return keyword_for_tag(int(tag, 16)) or tag


def element(tag: str, *values: Any, vr: str | None = None) -> dict[str, Any]:
    """A DICOM JSON element; no values gives an empty (zero-length) element."""
    result: dict[str, Any] = {"vr": vr or vr_of(tag)}
    if values:
        result["Value"] = list(values)
    return result


def first_value(dataset: dict[str, Any], tag: str) -> Any:
    try:
        return dataset[tag]["Value"][0]
    except (KeyError, IndexError, TypeError):
        return None


def absolute_bulk_uris(value: Any, instance_url: str) -> Any:
    """A copy of a DICOM JSON value with the stored relative BulkDataURIs made absolute."""
    if isinstance(value, dict):
        return {
            key: f"{instance_url}/{item}"
            if key == "BulkDataURI" and isinstance(item, str) and not item.startswith(("http:", "https:"))
            else absolute_bulk_uris(item, instance_url)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [absolute_bulk_uris(item, instance_url) for item in value]
    return value
