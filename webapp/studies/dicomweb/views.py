"""DICOMweb views: thin async wrappers around :mod:`.qido`, :mod:`.wado` and :mod:`.stow`.

The views are async so that streamed responses are served without a thread per chunk, and each request's
database and file work runs with ``sync_to_async`` in one hop. Under ASGI, Django gives every request its own
thread-sensitive context, so those hops run in a per-request thread: parallel frame requests run in parallel,
the database connection is the one the request's middleware already opened (and closed when it ends), and
tests see the test transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse

from . import qido, stow, wado
from .http import (
    DICOM_JSON,
    dicom_json_response,
    endpoint,
    multipart_response,
    multipart_type,
    new_boundary,
    part_head,
    part_tail,
    require_json,
)

CHUNK = 1024 * 1024


def _base_url(request: HttpRequest) -> str:
    path = reverse("dicomweb:studies").removesuffix("/studies")
    # A configured public URL wins over the Host header, which proxies and some clients get wrong.
    if settings.ANNOVOX_PUBLIC_URL:
        return settings.ANNOVOX_PUBLIC_URL + path
    return request.build_absolute_uri(path)


def _accept(request: HttpRequest) -> str | None:
    return request.headers.get("Accept")


# --- QIDO-RS -----------------------------------------------------------------------------------------------


async def _search(request: HttpRequest, level: str, scope: dict[str, str]) -> HttpResponse:
    require_json(request)
    results, warnings = await sync_to_async(qido.search)(level, request.GET, scope, _base_url(request))
    return dicom_json_response(results, warnings=warnings)


async def _search_studies(request: HttpRequest) -> HttpResponse:
    return await _search(request, qido.STUDY, {})


async def _search_series(request: HttpRequest, study: str | None = None) -> HttpResponse:
    return await _search(request, qido.SERIES, {"study": study} if study else {})


async def _search_instances(
    request: HttpRequest, study: str | None = None, series: str | None = None
) -> HttpResponse:
    scope = {"study": study} if study else {}
    if series:
        scope["series"] = series
    return await _search(request, qido.INSTANCE, scope)


# --- WADO-RS -----------------------------------------------------------------------------------------------


def _read_block(name: str, offset: int) -> bytes:
    with default_storage.open(name, "rb") as file:
        file.seek(offset)
        return file.read(CHUNK)


async def _stream_files(files: list[wado.StoredFile], boundary: str) -> AsyncIterator[bytes]:
    # Streamed a block at a time: a study can be larger than the memory of the server.
    for index, stored in enumerate(files):
        yield part_head(boundary, f"application/dicom; transfer-syntax={stored.transfer_syntax}", index == 0)
        offset = 0
        while True:
            block = await sync_to_async(_read_block)(stored.name, offset)
            if block:
                yield block
            if len(block) < CHUNK:
                break
            offset += len(block)
    yield part_tail(boundary)


async def _retrieve(
    request: HttpRequest, study: str, series: str | None = None, sop: str | None = None
) -> HttpResponse:
    files = await sync_to_async(wado.stored_files)(study, series, sop)
    wado.check_retrieve_accept(_accept(request), files)
    boundary = new_boundary()
    return StreamingHttpResponse(
        _stream_files(files, boundary), content_type=multipart_type("application/dicom", boundary)
    )


async def _stream_metadata(batches: list[list[int]], base_url: str) -> AsyncIterator[bytes]:
    yield b"["
    for index, batch in enumerate(batches):
        yield (b"," if index else b"") + await sync_to_async(wado.metadata_json)(batch, base_url)
    yield b"]"


async def _metadata(
    request: HttpRequest, study: str, series: str | None = None, sop: str | None = None
) -> HttpResponse:
    require_json(request)
    batches = await sync_to_async(wado.metadata_pks)(study, series, sop)
    base_url = _base_url(request)
    if len(batches) == 1:
        return dicom_json_response(
            b"[" + await sync_to_async(wado.metadata_json)(batches[0], base_url) + b"]"
        )
    return StreamingHttpResponse(_stream_metadata(batches, base_url), content_type=DICOM_JSON)


async def _frames(request: HttpRequest, study: str, series: str, sop: str, frames: str) -> HttpResponse:
    part_type, parts = await sync_to_async(wado.frames)(study, series, sop, frames, _accept(request))
    return multipart_response(part_type, parts)


async def _bulkdata(request: HttpRequest, study: str, series: str, sop: str, tag: str) -> HttpResponse:
    part_type, parts = await sync_to_async(wado.bulkdata)(study, series, sop, tag, _accept(request))
    return multipart_response(part_type, parts)


async def _rendered(
    request: HttpRequest, study: str, series: str, sop: str, frames: str | None = None
) -> HttpResponse:
    media_type, data = await sync_to_async(wado.rendered)(
        study, series, sop, frames, request.GET, _accept(request)
    )
    return HttpResponse(data, content_type=media_type)


# --- STOW-RS -----------------------------------------------------------------------------------------------


async def _store(request: HttpRequest, study: str | None = None) -> HttpResponse:
    content_type = request.headers.get("Content-Type", "")
    base_url = _base_url(request)
    status, body = await sync_to_async(lambda: stow.store(request.body, content_type, study, base_url))()
    return dicom_json_response(body, status=status)


studies = endpoint(GET=_search_studies, POST=_store)
study = endpoint(GET=_retrieve, POST=_store)
study_metadata = endpoint(GET=_metadata)
series_search = endpoint(GET=_search_series)
instance_search = endpoint(GET=_search_instances)
series = endpoint(GET=_retrieve)
series_metadata = endpoint(GET=_metadata)
instance = endpoint(GET=_retrieve)
instance_metadata = endpoint(GET=_metadata)
frames = endpoint(GET=_frames)
rendered = endpoint(GET=_rendered)
bulkdata = endpoint(GET=_bulkdata)
