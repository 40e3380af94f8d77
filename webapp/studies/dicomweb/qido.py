"""QIDO-RS: search for studies, series and instances (PS3.18 10.6).

Matching runs on the indexed columns of the study database; the attributes returned come from the stored DICOM
JSON of an instance (each instance's own, or the first stored instance of a study or series), extracted by the
database so that large metadata (a SEG with hundreds of frames) is not loaded for a study list. Counts and
ModalitiesInStudy are computed with one grouped query per page, whatever the page size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from django.db.models import Count, Exists, F, Min, OuterRef, Q
from django.http import QueryDict

from ..models import Instance, Series, Study
from .dicomjson import JsonMember, absolute_bulk_uris, element, keyword_of, tag_of
from .http import bad_request

STUDY, SERIES, INSTANCE = "study", "series", "instance"
RANK = {STUDY: 0, SERIES: 1, INSTANCE: 2}
# ORM path from the model searched to the model of each level.
PATHS = {
    STUDY: {STUDY: ""},
    SERIES: {STUDY: "study__", SERIES: ""},
    INSTANCE: {STUDY: "series__study__", SERIES: "series__", INSTANCE: ""},
}
MODELS = {STUDY: Study, SERIES: Series, INSTANCE: Instance}


@dataclass(frozen=True)
class MatchKey:
    level: str
    field: str  # column relative to the level's model
    kind: str  # uid | text | pn | code | number | date | modalities


MATCH_KEYS: dict[str, MatchKey] = {
    "00100010": MatchKey(STUDY, "patient__patient_name", "pn"),
    "00100020": MatchKey(STUDY, "patient__patient_id", "text"),
    "00100030": MatchKey(STUDY, "patient__birth_date", "date"),
    "00100040": MatchKey(STUDY, "patient__sex", "code"),
    "0020000D": MatchKey(STUDY, "study_instance_uid", "uid"),
    "00080020": MatchKey(STUDY, "study_date", "date"),
    "00080050": MatchKey(STUDY, "accession_number", "text"),
    "00200010": MatchKey(STUDY, "study_id", "text"),
    "00081030": MatchKey(STUDY, "study_description", "text"),
    "00080090": MatchKey(STUDY, "referring_physician_name", "pn"),
    "00080061": MatchKey(STUDY, "", "modalities"),
    "00080060": MatchKey(SERIES, "modality", "code"),
    "0020000E": MatchKey(SERIES, "series_instance_uid", "uid"),
    "00200011": MatchKey(SERIES, "series_number", "number"),
    "0008103E": MatchKey(SERIES, "series_description", "text"),
    "00180015": MatchKey(SERIES, "body_part_examined", "text"),
    "00080018": MatchKey(INSTANCE, "sop_instance_uid", "uid"),
    "00080016": MatchKey(INSTANCE, "sop_class_uid", "uid"),
    "00200013": MatchKey(INSTANCE, "instance_number", "number"),
}

# Return attributes of each level (PS3.18 Tables 10.6.3-3 to 10.6.3-5). Those in OPTIONAL are returned only
# when the data set has them; the others always, empty when absent.
RETURN_TAGS = {
    STUDY: [
        "00080005", "00080020", "00080030", "00080050", "00080056", "00080061", "00080090", "00080201",
        "00081030", "00081190", "00100010", "00100020", "00100030", "00100040", "0020000D", "00200010",
        "00201206", "00201208",
    ],
    SERIES: [
        "00080005", "00080021", "00080031", "00080056", "00080060", "00080201", "0008103E", "00081190",
        "0020000D", "0020000E", "00200011", "00201209", "00400244", "00400245", "00400275",
    ],
    INSTANCE: [
        "00080005", "00080016", "00080018", "00080056", "00080201", "00081190", "0020000D", "0020000E",
        "00200013", "00280008", "00280010", "00280011", "00280100",
    ],
}  # fmt: skip
OPTIONAL = {
    "00080005", "00080021", "00080031", "00080201", "00400244", "00400245", "00400275",
    "00280008", "00280010", "00280011", "00280100",
}  # fmt: skip
# Computed per result, never read from the stored metadata.
COMPUTED = {"00080056", "00080061", "00081190", "00201206", "00201208", "00201209"}
AVAILABILITY = element("00080056", "ONLINE")
DATE = re.compile(r"^\d{8}$")
CONTROL_PARAMS = {"includefield", "limit", "offset", "fuzzymatching"}


@dataclass
class Query:
    level: str
    conditions: list[Q] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # returned, in addition to the level's standard ones
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def returned(self) -> list[str]:
        """Standard attributes of the level, those of the levels above for a search across them, and the
        included and matched ones."""
        tags = list(RETURN_TAGS[self.level])
        for upper in (STUDY, SERIES)[: RANK[self.level]]:
            tags += [t for t in RETURN_TAGS[upper] if t not in COMPUTED]
        return list(dict.fromkeys(tags + self.tags))


def search(
    level: str, params: QueryDict, scope: dict[str, str], base_url: str
) -> tuple[list[dict], list[str]]:
    """Results of a search at ``level`` within ``scope`` (``{"study": uid, "series": uid}`` from the URL).

    Returns the DICOM JSON data sets and the warnings for the ``Warning`` header.
    """
    query = parse_query(level, params, scope)
    if query.ignored:
        names = ", ".join(query.ignored)
        query.warnings.append(f"these attributes are not supported for matching and were ignored: {names}")
    results = {STUDY: _studies, SERIES: _series, INSTANCE: _instances}[level](query, base_url)
    return results, query.warnings


# --- parsing ------------------------------------------------------------------------------------------------


def parse_query(level: str, params: QueryDict, scope: dict[str, str]) -> Query:
    query = Query(level)
    for scope_level, uid in scope.items():
        query.conditions.append(Q(**{PATHS[level][scope_level] + f"{scope_level}_instance_uid": uid}))
    for name in params:
        values = params.getlist(name)
        if name in CONTROL_PARAMS:
            _control(query, name, values)
        else:
            _matching(query, name, values)
    return query


def _control(query: Query, name: str, values: list[str]) -> None:
    if name == "includefield":
        for item in (i.strip() for v in values for i in v.split(",")):
            if item.lower() == "all":
                query.include_all = True
            elif item:
                tag = tag_of(item)
                if tag is None:
                    raise bad_request(f"includefield: {item!r} is neither a DICOM keyword nor a tag")
                query.tags.append(tag)
    elif name in ("limit", "offset"):
        text = values[-1].strip()
        if not text.isdigit():
            raise bad_request(f"{name} must be a non-negative integer, not {text!r}")
        if name == "offset":
            query.offset = int(text)
        else:  # limit=0 means no limit, as in Orthanc
            query.limit = int(text) or None
    elif name == "fuzzymatching":
        text = values[-1].strip().lower()
        if text not in ("true", "false", ""):
            raise bad_request(f"fuzzymatching must be true or false, not {values[-1]!r}")
        if text == "true":
            query.warnings.append("fuzzy matching is not supported: exact and wildcard matching were used")


def _matching(query: Query, name: str, values: list[str]) -> None:
    tag = tag_of(name)
    if tag is None:
        if "." in name:  # a sequence path such as 00400275.00321060
            query.ignored.append(name)
            return
        raise bad_request(
            f"unknown query parameter {name!r}: expected a DICOM keyword or tag (e.g. PatientID or "
            "00100020), includefield, limit, offset or fuzzymatching"
        )
    query.tags.append(tag)
    key = MATCH_KEYS.get(tag)
    if key is None or RANK[key.level] > RANK[query.level]:
        query.ignored.append(keyword_of(tag))
        return
    if len(values) > 1 and key.kind not in ("uid", "code", "modalities"):
        raise bad_request(f"{name} is given more than once")
    condition = _condition(key, ",".join(values).strip(), query.level, name)
    if condition is not None:
        query.conditions.append(condition)


def _condition(key: MatchKey, value: str, level: str, name: str) -> Q | None:
    if value in ("", "*"):  # universal matching: returned, but every record matches
        return None
    path = PATHS[level][key.level] + key.field
    if key.kind in ("uid", "code", "modalities"):
        items = [item.strip() for item in re.split(r"[,\\]", value) if item.strip()]
        if key.kind == "modalities":
            study_pk = OuterRef(PATHS[level][STUDY] + "pk")
            return Q(Exists(Series.objects.filter(study_id=study_pk, modality__in=items)))
        if key.kind == "code" and len(items) == 1 and _has_wildcard(items[0]):
            return _wildcard(path, items[0], ignore_case=False)
        return Q(**{f"{path}__in": items})
    if key.kind == "number":
        try:
            return Q(**{path: int(value)})
        except ValueError:
            raise bad_request(f"{name} must be an integer, not {value!r}") from None
    if key.kind == "date":
        return _date_condition(path, value, name)
    if _has_wildcard(value):
        return _wildcard(path, value, ignore_case=key.kind == "pn")
    # Person names match regardless of case, as in Orthanc (its CaseSensitivePN defaults to false).
    return Q(**{f"{path}__iexact" if key.kind == "pn" else path: value})


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _wildcard(path: str, pattern: str, ignore_case: bool) -> Q:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return Q(**{f"{path}__{'iregex' if ignore_case else 'regex'}": f"^{regex}$"})


def _date_condition(path: str, value: str, name: str) -> Q:
    if "-" not in value:
        return Q(**{path: _parse_date(value, name)})
    start, _, end = (part.strip() for part in value.partition("-"))
    if not start and not end:
        raise bad_request(f"{name}: a range needs at least one date, e.g. 20200101-20201231")
    condition = Q()
    if start:
        condition &= Q(**{f"{path}__gte": _parse_date(start, name)})
    if end:
        condition &= Q(**{f"{path}__lte": _parse_date(end, name)})
    return condition


def _parse_date(text: str, name: str) -> date:
    if DATE.match(text):
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError:
            pass
    raise bad_request(f"{name}: {text!r} is not a date (YYYYMMDD, or a range YYYYMMDD-YYYYMMDD)")


# --- results ------------------------------------------------------------------------------------------------

BATCH = 500  # primary keys per IN (...) list, well under SQLite's limit on query parameters


def _batches(pks: list[int]) -> list[list[int]]:
    return [pks[i : i + BATCH] for i in range(0, len(pks), BATCH)]


def _page(queryset: Any, query: Query) -> Any:
    end = None if query.limit is None else query.offset + query.limit
    return queryset.order_by("pk")[query.offset : end]


def _instance_path(study: str, series: str, sop: str) -> str:
    return f"/studies/{study}/series/{series}/instances/{sop}"


def _metadata(pks: list[int], query: Query) -> dict[int, tuple[str, dict[str, Any]]]:
    """For each instance: its URL path below the base, and its stored elements that may be returned."""
    uids = ("series__study__study_instance_uid", "series__series_instance_uid", "sop_instance_uid")
    tags = [t for t in query.returned() if t not in COMPUTED]
    members = {} if query.include_all else {f"m{tag}": JsonMember("metadata", tag) for tag in tags}
    result = {}
    for batch in _batches(pks):
        rows = Instance.objects.filter(pk__in=batch)
        for row in rows.values("pk", *uids, *(["metadata"] if query.include_all else []), **members):
            if query.include_all:
                data = row["metadata"]
            else:
                data = {tag: row[f"m{tag}"] for tag in tags if row[f"m{tag}"] is not None}
            result[row["pk"]] = (_instance_path(*(row[u] for u in uids)), data)
    return result


def _dataset(query: Query, stored: dict[str, Any], computed: dict[str, Any], instance_url: str) -> dict:
    standard = set(RETURN_TAGS[query.level]) - OPTIONAL
    result = {}
    for tag in query.returned():
        if tag in computed:
            result[tag] = computed[tag]
        elif tag in stored:
            result[tag] = stored[tag]
        elif tag in standard:
            result[tag] = element(tag)
    if query.include_all:
        for tag, value in stored.items():
            if tag not in result and (query.level == INSTANCE or _plain(value)):
                result[tag] = value
    return absolute_bulk_uris(dict(sorted(result.items())), instance_url)


def _plain(value: dict[str, Any]) -> bool:
    # Above the instance level "all" means the plain attributes of the first instance: its sequences and
    # bulk data describe that one instance rather than the study or series.
    return value.get("vr") != "SQ" and "BulkDataURI" not in value and "InlineBinary" not in value


def _studies(query: Query, base_url: str) -> list[dict]:
    page = list(_page(Study.objects.filter(*query.conditions), query).values_list("pk", "study_instance_uid"))
    stats: dict[int, dict[str, int]] = {}
    modalities: dict[int, set[str]] = {}
    for batch in _batches([pk for pk, _ in page]):
        instances = Instance.objects.filter(series__study_id__in=batch).values(study=F("series__study_id"))
        for row in instances.annotate(
            instances=Count("pk"), series=Count("series", distinct=True), first=Min("pk")
        ):
            stats[row["study"]] = row
        for study_pk, modality in Series.objects.filter(study_id__in=batch).values_list(
            "study_id", "modality"
        ):
            if modality:
                modalities.setdefault(study_pk, set()).add(modality)
    stored = _metadata([row["first"] for row in stats.values()], query)
    results = []
    for pk, uid in page:
        if pk not in stats:  # no instances left (being deleted)
            continue
        path, data = stored[stats[pk]["first"]]
        computed = {
            "00080056": AVAILABILITY,
            "00080061": element("00080061", *sorted(modalities.get(pk, ()))),
            "00081190": element("00081190", f"{base_url}/studies/{uid}"),
            "00201206": element("00201206", stats[pk]["series"]),
            "00201208": element("00201208", stats[pk]["instances"]),
        }
        results.append(_dataset(query, data, computed, base_url + path))
    return results


def _series(query: Query, base_url: str) -> list[dict]:
    queryset = _page(Series.objects.filter(*query.conditions), query)
    page = list(queryset.values_list("pk", "series_instance_uid", "study__study_instance_uid"))
    stats: dict[int, dict[str, int]] = {}
    for batch in _batches([pk for pk, _, _ in page]):
        instances = Instance.objects.filter(series_id__in=batch).values("series_id")
        for row in instances.annotate(instances=Count("pk"), first=Min("pk")):
            stats[row["series_id"]] = row
    stored = _metadata([row["first"] for row in stats.values()], query)
    results = []
    for pk, uid, study_uid in page:
        if pk not in stats:
            continue
        path, data = stored[stats[pk]["first"]]
        computed = {
            "00080056": AVAILABILITY,
            "00081190": element("00081190", f"{base_url}/studies/{study_uid}/series/{uid}"),
            "00201209": element("00201209", stats[pk]["instances"]),
        }
        results.append(_dataset(query, data, computed, base_url + path))
    return results


def _instances(query: Query, base_url: str) -> list[dict]:
    pks = list(_page(Instance.objects.filter(*query.conditions), query).values_list("pk", flat=True))
    stored = _metadata(pks, query)
    results = []
    for pk in pks:
        path, data = stored[pk]
        computed = {"00080056": AVAILABILITY, "00081190": element("00081190", base_url + path)}
        results.append(_dataset(query, data, computed, base_url + path))
    return results
