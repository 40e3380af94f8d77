"""The interactive service end to end: Daphne, the WebSocket consumer, inference workers, the real default
model, the database and the channel layer (in-memory with the in-process worker; real Redis with worker
processes). Results are checked against the engine run directly on the same volume."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
from websockets.exceptions import ConnectionClosed

from inference.model import load_model
from inference.session import Session
from tests.conftest import DATA, require
from tests.interactive_client import InteractiveClient
from tests.servers import AnnovoxServer, database_like_ci
from tests.test_services import _reachable
from webapp.interactive.protocol import (
    MAX_OUTLINE_POINTS,
    MaskFrame,
    ProtocolError,
    decode_frame,
    encode_frame,
    parse_message,
    request_of,
)
from webapp.interactive.worker import DRAFT_DELAY_S
from webapp.studies.volume.geometry import volume_from_datasets

CT = DATA / "ct_totalseg" / "dicom_raw_uidfixed"
LIVER_LABEL = DATA / "ct_totalseg" / "nifti" / "example_seg_dicom_dicomorder.nii.gz"
LIVER = 5  # TotalSegmentator's "total" class map

PASSWORD = "a long test password"
SETUP = f"""
PASSWORD = {PASSWORD!r}
from webapp.studies.models import Series
from webapp.segmentations.models import Segmentation, Segment
from django.contrib.auth import get_user_model
series = Series.objects.get()
segmentation = Segmentation.objects.create(series=series, label="organs")
for number, label in [(1, "liver"), (2, "spleen")]:
    Segment.objects.create(segmentation=segmentation, number=number, label=label)
get_user_model().objects.create_user("outsider", password=None)
from django.contrib.auth.models import Permission
browser_user = get_user_model().objects.create_user("annotator", password=PASSWORD)
browser_user.user_permissions.add(Permission.objects.get(codename="view_series"))
from django.core.management import call_command
call_command("issue_token", "outsider")
print(series.series_instance_uid, segmentation.pk)
"""


# --- the protocol on its own -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"type": "teleport"}', "unknown_type"),
        ('{"type": "prompt", "request": 1, "kind": "point", "positive": true}', "bad_message"),
        (
            '{"type": "prompt", "request": 1, "kind": "point", "positive": true, "index": [1, 2]}',
            "bad_message",
        ),
        (
            '{"type": "prompt", "request": 1, "kind": "point", "positive": 1, "index": [1, 2, 3]}',
            "bad_message",
        ),
        ('{"type": "prompt", "request": 1, "kind": "wand", "positive": true}', "bad_message"),
        ('{"type": "undo"}', "bad_message"),
        ('{"type": "open", "series": "1.2", "segmentation": 1, "segment": 1, "extra": 0}', "bad_message"),
    ],
)
def test_malformed_messages_get_their_error_code(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as error:
        parse_message(text)
    assert error.value.code == code
    assert str(error.value)


def test_every_message_kind_parses() -> None:
    for message in [
        {"type": "open", "series": "1.2.3", "segmentation": 1, "segment": 2, "model": "default"},
        {"type": "prompt", "request": 1, "kind": "point", "positive": True, "index": [1, 2, 3]},
        {"type": "prompt", "request": 2, "kind": "box", "positive": False, "start": [0, 0, 0],
         "stop": [1, 5, 5]},
        {"type": "prompt", "request": 3, "kind": "lasso", "positive": True, "axis": 0, "slice": 4,
         "points": [[4, 1, 1], [4, 1, 9], [4, 9, 9]]},
        {"type": "undo", "request": 4},
        {"type": "reset", "request": 5},
        {"type": "close"},
    ]:  # fmt: skip
        assert parse_message(json.dumps(message)) == message


def test_outlines_with_absurd_numbers_of_points_are_refused() -> None:
    points = [[0, 1, i % 50] for i in range(MAX_OUTLINE_POINTS + 1)]
    message = {"type": "prompt", "request": 1, "kind": "lasso", "positive": True, "axis": 0, "slice": 0}
    with pytest.raises(ProtocolError, match="points"):
        parse_message(json.dumps({**message, "points": points}))


def test_the_request_of_a_refused_message_is_read_without_validating_it() -> None:
    frame = encode_frame(MaskFrame(7, (0, 0, 0), (1, 1, 1), np.ones((1, 1, 1), bool)))
    assert request_of(None, frame) == 7
    assert request_of(None, b"AVX") == 0
    assert request_of('{"type": "fly", "request": 12}', None) == 12
    for text in ("{oops", "[1]", '{"request": true}', '{"request": -1}', '{"request": 4294967296}'):
        assert request_of(text, None) == 0, text


def test_mask_frames_round_trip_and_malformed_ones_are_refused() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((3, 17, 9)) > 0.5
    frame = MaskFrame(7, (2, 5, 1), (5, 22, 10), mask)
    back = decode_frame(encode_frame(frame), (10, 30, 30))
    assert (back.request, back.start, back.stop, back.replace) == (7, (2, 5, 1), (5, 22, 10), False)
    assert np.array_equal(back.mask, mask)
    data = encode_frame(frame)
    for broken, code in [
        (data[:20], "bad_frame"),
        (b"XXXX" + data[4:], "bad_frame"),
        (data[:36] + b"not zlib", "bad_frame"),
        (data[:-3], "bad_frame"),
    ]:
        with pytest.raises(ProtocolError) as error:
            decode_frame(broken, (10, 30, 30))
        assert error.value.code == code
    with pytest.raises(ProtocolError) as error:
        decode_frame(data, (4, 30, 30))
    assert error.value.code == "out_of_bounds"
    # A frame claiming a huge region but holding a small zlib stream of zeros (a zip bomb) is refused
    # without inflating it.
    bomb = MaskFrame(1, (0, 0, 0), (600, 600, 600), np.zeros((600, 600, 600), dtype=bool))
    with pytest.raises(ProtocolError):
        decode_frame(encode_frame(bomb)[:-8], (600, 600, 600))


# --- live services ----------------------------------------------------------------------------------------


def _volume() -> np.ndarray:
    files = sorted(CT.iterdir())
    return volume_from_datasets([pydicom.dcmread(f) for f in files]).array


def _liver_points() -> list[tuple[int, int, int]]:
    """Interior points of the reference liver label, in [k, j, i], spread over the organ."""
    label = np.asarray(nib.load(LIVER_LABEL).dataobj).transpose(2, 1, 0) == LIVER
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(label)
    points = []
    for k in (10, 6, 14):
        j, i = np.unravel_index(int(np.argmax(depth[k])), depth[k].shape)
        points.append((k, int(j), int(i)))
    return points


def _setup_data(server: AnnovoxServer) -> tuple[str, int, str]:
    server.manage("import_dicom", str(CT))
    lines = server.manage("shell", "--no-imports", "-c", SETUP).stdout.strip().splitlines()
    outsider_token = lines[-2].strip()
    series_uid, segmentation = lines[-1].split()
    return series_uid, int(segmentation), outsider_token


def _server_query(server: AnnovoxServer, code: str) -> Any:
    """Run Python in the server's environment; its last line of output, parsed as JSON."""
    output = server.manage("shell", "--no-imports", "-c", code).stdout.strip().splitlines()
    return json.loads(output[-1])


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AnnovoxServer, str, int, str]]:
    """The embedded default: SQLite, the in-memory channel layer, the in-process worker."""
    require(CT.is_dir(), f"the shared CT series {CT} is missing")
    server = AnnovoxServer(tmp_path_factory.mktemp("interactive"), extra_env={"ANNOVOX_WS_RATE": "20"})
    with server:
        series_uid, segmentation, outsider = _setup_data(server)
        yield server, series_uid, segmentation, outsider


@pytest.fixture(scope="module")
def reference() -> Session:
    session = Session(load_model())
    session.set_image(_volume())
    return session


def test_prompts_give_the_engines_masks_and_are_recorded(embedded, reference: Session) -> None:
    server, series_uid, segmentation, _ = embedded
    points = _liver_points()
    reference.reset()
    with InteractiveClient(server.websocket_url, server.token) as client:
        ready = client.open(series_uid, segmentation, 1)
        assert ready["geometry"]["shape"] == [20, 512, 512]
        assert ready["model"]["name"] == "default" and ready["model"]["license"] == "Apache-2.0"
        assert not client.mask.any()

        result = client.result(client.prompt("point", index=list(points[0])))
        expected = reference.add_point(points[0])
        frame = client.frames[-1]
        assert (frame.start, frame.stop) == (expected.start, expected.stop)  # the changed region only
        assert np.array_equal(frame.mask, expected.mask)
        assert result["bytes"] == len(encode_frame(frame))
        assert set(result["timings"]) >= {"queue", "inference", "encoding", "total"}
        assert np.array_equal(client.mask, reference.mask.astype(bool))

        k = points[1][0]
        box_start = [k, points[1][1] - 30, points[1][2] - 30]
        client.result(
            client.prompt("box", start=box_start, stop=[k + 1, points[1][1] + 30, points[1][2] + 30])
        )
        reference.add_box(tuple(box_start), (k + 1, points[1][1] + 30, points[1][2] + 30))
        assert np.array_equal(client.mask, reference.mask.astype(bool))

        k, j, i = points[2]
        lasso = [[k, j - 20, i - 20], [k, j - 20, i + 20], [k, j + 20, i + 20], [k, j + 20, i - 20]]
        client.result(client.prompt("lasso", axis=0, slice=k, points=lasso))
        reference.add_lasso(axis=0, index=k, polygon=[tuple(p) for p in lasso])
        scribble = [[k, j, i - 10], [k, j + 5, i], [k, j, i + 10]]
        client.result(client.prompt("scribble", positive=False, axis=0, slice=k, points=scribble))
        reference.add_scribble(axis=0, index=k, polyline=[tuple(p) for p in scribble], positive=False)
        assert np.array_equal(client.mask, reference.mask.astype(bool))

        client.result(client.undo())
        reference.undo()
        assert np.array_equal(client.mask, reference.mask.astype(bool))
        before_reload = client.mask.copy()

    # Every accepted action is in the prompt history, in order, with who, when and which model.
    history = _server_query(
        server,
        "import json\nfrom webapp.segmentations.models import PromptEvent\n"
        "print(json.dumps([[e.sequence, e.kind, e.status, e.user.username, e.model_name, bool(e.created)] "
        "for e in PromptEvent.objects.filter(session__segment__number=1).order_by('sequence')]))",
    )
    assert [h[1] for h in history] == ["point", "box", "lasso", "scribble", "undo"]
    assert [h[0] for h in history] == [1, 2, 3, 4, 5]
    assert all(h[2] == "applied" and h[3] == "interop" and h[4] == "default" and h[5] for h in history)

    # A reload resumes the session: the mask comes back, and prompts go on from the same state.
    with InteractiveClient(server.websocket_url, server.token) as client:
        client.open(series_uid, segmentation, 1)
        assert np.array_equal(client.mask, before_reload)
        client.result(client.prompt("point", index=list(points[1])))
        reference.add_point(points[1])
        assert np.array_equal(client.mask, reference.mask.astype(bool))
        client.result(client.reset())
        assert not client.mask.any()


def test_a_closed_session_leaves_a_draft_that_the_next_session_starts_from(embedded) -> None:
    server, series_uid, segmentation, _ = embedded
    point = _liver_points()[0]
    with InteractiveClient(server.websocket_url, server.token) as client:
        client.open(series_uid, segmentation, 2)
        client.result(client.prompt("point", index=list(point)))
        drawn = client.mask.copy()
        client.send({"type": "close"})
        client.wait_for("closed")
    with InteractiveClient(server.websocket_url, server.token) as client:
        client.open(series_uid, segmentation, 2)
        assert drawn.any() and np.array_equal(client.mask, drawn)
        first = _server_query(
            server,
            "import json\nfrom webapp.segmentations.models import InteractiveSession\n"
            "s = InteractiveSession.objects.filter(segment__number=2, closed__isnull=True).get()\n"
            "print(json.dumps([e.kind for e in s.events.all()]))",
        )
        assert first == ["initial_mask"]


def _working_mask(server: AnnovoxServer, segmentation: int, number: int) -> np.ndarray:
    response = requests.get(
        f"{server.url}/api/segmentations/{segmentation}/draft/", headers=server.headers(), timeout=60
    )
    assert response.status_code == 200, response.text[:500]
    return (np.load(io.BytesIO(gzip.decompress(response.content))) == number).any(axis=0)


def test_initial_masks_replace_the_mask_and_are_in_the_working_labelmap_at_once(embedded) -> None:
    """A reload right after an edit reads the working labelmap before the worker's delayed draft write: the
    read has the worker write it first, whether the page's connection is still open or already gone."""
    server, series_uid, segmentation, _ = embedded
    with InteractiveClient(server.websocket_url, server.token) as client:
        client.open(series_uid, segmentation, 2)
        mask = np.zeros(client.mask.shape, dtype=bool)
        mask[3:7, 100:150, 300:420] = True
        client.result(client.initial_mask(mask))
        assert np.array_equal(client.mask, mask)
        began = time.monotonic()
        assert np.array_equal(_working_mask(server, segmentation, 2), mask)
        assert time.monotonic() - began < DRAFT_DELAY_S  # read before the worker would have written it
        mask[4, 120:130, 310:320] = False
        client.result(client.initial_mask(mask))
    assert np.array_equal(_working_mask(server, segmentation, 2), mask)


def test_a_new_session_starts_from_another_sessions_edit_of_a_moment_ago(embedded) -> None:
    """Another annotator opens a segment right after someone edited it, before that worker's delayed draft
    write: the new session starts from the edit, as the opening has the draft written first."""
    server, series_uid, segmentation, _ = embedded
    colleague = server.manage("issue_token", "annotator").stdout.strip().splitlines()[-1].strip()
    created = requests.post(
        f"{server.url}/api/segmentations/{segmentation}/segments/",
        json={"label": "shared"},
        headers=server.headers(),
        timeout=60,
    )
    assert created.status_code == 201, created.text[:500]
    number = created.json()["number"]
    with InteractiveClient(server.websocket_url, server.token) as first:
        first.open(series_uid, segmentation, number)
        mask = np.zeros(first.mask.shape, dtype=bool)
        mask[8:12, 200:260, 150:230] = True
        first.result(first.initial_mask(mask))
        # At once: without the opening's flush, the new session would start from the draft of a moment before
        # (here: none), the first worker writing it DRAFT_DELAY_S after the edit.
        with InteractiveClient(server.websocket_url, colleague) as second:
            second.open(series_uid, segmentation, number)
            assert np.array_equal(second.mask, mask)


def test_credentials_and_access(embedded) -> None:
    server, series_uid, segmentation, outsider = embedded
    for token in (None, "avx_not-a-token"):
        with InteractiveClient(server.websocket_url, token) as client:
            with pytest.raises(ConnectionClosed) as closed:
                client.receive(timeout=10)
            assert closed.value.rcvd.code == 4401
    with InteractiveClient(server.websocket_url, outsider) as client:
        client.send({"type": "open", "series": series_uid, "segmentation": segmentation, "segment": 1})
        with pytest.raises(ConnectionClosed) as closed:
            client.receive(timeout=10)
        assert closed.value.rcvd.code == 4403

    # The browser's way in: the session cookie, from our own page. From another site's page the same cookie
    # is refused (cross-site WebSocket hijacking).
    with requests.Session() as browser:
        browser.get(f"{server.url}/accounts/login/")
        browser.post(
            f"{server.url}/accounts/login/",
            data={
                "username": "annotator",
                "password": PASSWORD,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            headers={"Referer": f"{server.url}/accounts/login/"},
        )
        cookie = f"sessionid={browser.cookies['sessionid']}"
    with InteractiveClient(server.websocket_url, headers={"Cookie": cookie, "Origin": server.url}) as client:
        assert client.open(series_uid, segmentation, 2)["session"]
    with InteractiveClient(
        server.websocket_url, headers={"Cookie": cookie, "Origin": "https://evil.example"}
    ) as c:
        with pytest.raises(ConnectionClosed) as closed:
            c.receive(timeout=10)
        assert closed.value.rcvd.code == 4403


def test_bad_input_gets_errors_and_the_connection_stays_usable(embedded) -> None:
    server, series_uid, segmentation, _ = embedded
    with InteractiveClient(server.websocket_url, server.token) as client:
        client.send({"type": "prompt", "request": 1, "kind": "point", "positive": True, "index": [0, 0, 0]})
        assert client.wait_for("error")["code"] == "not_open"
        client.send({"type": "open", "series": series_uid, "segmentation": segmentation, "segment": 9})
        assert client.wait_for("error")["code"] == "not_found"
        client.open(series_uid, segmentation, 1)
        shape = client.ready["geometry"]["shape"]

        bad: list[tuple[Any, str]] = [
            ("{oops", "bad_json"),
            ({"type": "fly"}, "unknown_type"),
            ({"type": "prompt", "request": 2, "kind": "point", "positive": True, "index": [shape[0], 0, 0]},
             "out_of_bounds"),
            ({"type": "prompt", "request": 3, "kind": "box", "positive": True, "start": [0, 0, 0],
              "stop": [1, 600, 10]}, "out_of_bounds"),
            ({"type": "prompt", "request": 4, "kind": "lasso", "positive": True, "axis": 0, "slice": 3,
              "points": [[3, 1, i % 500] for i in range(MAX_OUTLINE_POINTS + 1)]}, "bad_message"),
            ({"type": "prompt", "request": 5, "kind": "scribble", "positive": True, "axis": 0, "slice": 3,
              "points": [[4, 1, 1], [4, 2, 2]]}, "bad_message"),
            ("x" * 300_000, "too_large"),
            (b"AVXM" + b"\0" * 40, "bad_frame"),
        ]  # fmt: skip
        for message, code in bad:
            client.send(message)
            error = client.wait_for("error")
            assert error["code"] == code, (message if len(str(message)) < 200 else code, error)
            assert error["message"]
            # An error names the request of the message it refuses, when it has one.
            assert error["request"] == (message.get("request", 0) if isinstance(message, dict) else 0)
        # Nothing of that was recorded, and the session still works.
        point = _liver_points()[0]
        result = client.result(client.prompt("point", index=list(point)))
        assert result["sequence"] == _server_query(
            server,
            "from webapp.segmentations.models import InteractiveSession as S\n"
            "print(S.objects.filter(segment__number=1, closed__isnull=True).get().events.count())",
        )

        # A flood: beyond the burst, messages are dropped with an error each; later ones work again.
        for _ in range(80):
            client.send(
                {"type": "prompt", "request": 99, "kind": "point", "positive": True, "index": [99, 0, 0]}
            )
        errors = [client.wait_for("error") for _ in range(80)]
        codes = [error["code"] for error in errors]
        assert "rate_limited" in codes and "out_of_bounds" in codes
        assert {error["request"] for error in errors} == {99}
        time.sleep(2.5)  # the bucket refills (20 a second)
        client.result(client.prompt("point", index=list(point)))


def test_one_annotators_burst_does_not_hold_up_another(embedded) -> None:
    server, series_uid, segmentation, _ = embedded
    points = _liver_points()
    with (
        InteractiveClient(server.websocket_url, server.token) as flooder,
        InteractiveClient(server.websocket_url, server.token) as other,
    ):
        flooder.open(series_uid, segmentation, 1)
        other.open(series_uid, segmentation, 2)
        burst = [flooder.prompt("point", index=list(points[n % 3])) for n in range(12)]
        request = other.prompt("point", index=list(points[0]))
        other.result(request)
        # The worker takes sessions in turn: the other prompt waited for at most the one running and one more.
        positions = [
            m["position"] for m in other.messages if m["type"] == "queued" and m["request"] == request
        ]
        assert all(p <= 2 for p in positions), positions
        # The flooder got results for the first 8 and a clear refusal for the rest.
        while sum(m["type"] in ("result", "error") for m in flooder.messages) < len(burst):
            flooder.receive()
        answered = [m["request"] for m in flooder.messages if m["type"] == "result"]
        refused = [m for m in flooder.messages if m["type"] == "error"]
        assert answered == burst[:8]
        assert [m["code"] for m in refused] == ["busy"] * 4
        assert {m["request"] for m in refused} == set(burst[8:])


def test_idle_sessions_are_evicted_and_rebuilt_and_busy_workers_say_queued(tmp_path: Path) -> None:
    require(CT.is_dir(), f"the shared CT series {CT} is missing")
    env = {"ANNOVOX_SESSION_IDLE_S": "2"}
    with AnnovoxServer(tmp_path, extra_env=env) as server:
        series_uid, segmentation, _ = _setup_data(server)
        points = _liver_points()
        with InteractiveClient(server.websocket_url, server.token) as client:
            ready = client.open(series_uid, segmentation, 1)
            # Two prompts at once: the second waits for the first, and the client is told so.
            first = client.prompt("point", index=list(points[0]))
            second = client.prompt("point", index=list(points[1]))
            assert client.wait_for("queued", second)["position"] == 1
            client.result(first)
            assert not client.result(second)["rebuilt"]
            mask = client.mask.copy()

            query = (
                "import json\nfrom webapp.segmentations.models import InteractiveSession as S\n"
                f"print(json.dumps(S.objects.get(pk={ready['session']!r}).worker_id))"
            )
            deadline = time.monotonic() + 30
            while _server_query(server, query) is not None:  # evicted: no longer on a worker
                assert time.monotonic() < deadline, "the idle session was not evicted"
                time.sleep(0.5)
            # The record stays: the next message rebuilds the session, undo steps included.
            assert client.result(client.undo())["rebuilt"]
            after_undo = client.mask.copy()
            client.result(client.prompt("point", index=list(points[1])))
            again = client.mask.copy()
        reference = Session(load_model())
        reference.set_image(_volume())
        reference.add_point(points[0])
        assert np.array_equal(after_undo, reference.mask.astype(bool))
        reference.add_point(points[1])
        assert np.array_equal(mask, reference.mask.astype(bool))
        assert np.array_equal(again, mask)


# --- recovery from a dead worker on real Redis --------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    host, _, port = url.split("://", 1)[1].split("/", 1)[0].rpartition(":")
    require(_reachable(host or "127.0.0.1", int(port or 6379)), f"Redis is not reachable at {url}")
    return url


@pytest.fixture
def database_url() -> Iterator[str | None]:
    with database_like_ci() as url:
        yield url


def _worker_pids(server: AnnovoxServer, session_id: str) -> int:
    name = _server_query(
        server,
        "import json\nfrom webapp.segmentations.models import InteractiveSession as S\n"
        f"print(json.dumps(S.objects.get(pk={session_id!r}).worker.name))",
    )
    return int(name.split(":")[1])


def test_a_killed_worker_is_replaced_and_the_mask_is_kept(
    tmp_path: Path, redis_url: str, database_url: str | None, reference: Session
) -> None:
    require(CT.is_dir(), f"the shared CT series {CT} is missing")
    # A fresh Redis database number keeps this test's channels apart from anything else on the server.
    env = {"REDIS_URL": redis_url, "ANNOVOX_INPROCESS_WORKER": "0", "ANNOVOX_WORKER_TIMEOUT_S": "3"}
    with AnnovoxServer(tmp_path, database_url=database_url, extra_env=env) as server:
        series_uid, segmentation, _ = _setup_data(server)
        workers = [server.start_worker("--max-sessions", "4", "--threads", "1") for _ in range(2)]
        points = _liver_points()
        reference.reset()
        with InteractiveClient(server.websocket_url, server.token) as other:
            # Placement: a second session goes to the other, less loaded worker.
            other_session = other.open(series_uid, segmentation, 2)["session"]
        with InteractiveClient(server.websocket_url, server.token) as client:
            ready = client.open(series_uid, segmentation, 1)
            assert _worker_pids(server, ready["session"]) != _worker_pids(server, other_session)
            for point in points[:2]:
                client.result(client.prompt("point", index=list(point)))
                reference.add_point(point)
            assert np.array_equal(client.mask, reference.mask.astype(bool))
            before = client.mask.copy()

            pid = _worker_pids(server, ready["session"])
            victim = next(w for w in workers if w.pid == pid)
            request = client.prompt("point", index=list(points[2]))
            victim.send_signal(signal.SIGKILL)  # in the middle of the session, with a prompt in flight
            victim.wait(timeout=10)
            result = client.result(request, timeout=120)
            reference.add_point(points[2])
            # The other worker rebuilt the session from its record, including the prompt in flight.
            assert _worker_pids(server, ready["session"]) != pid
            assert np.array_equal(client.mask, reference.mask.astype(bool))
            assert result["rebuilt"]

            # Undo goes back exactly to the mask before the kill: the undo history came through too.
            client.result(client.undo())
            assert np.array_equal(client.mask, before)
            # Read at once, the working labelmap has it: the worker process wrote the draft when asked.
            assert np.array_equal(_working_mask(server, segmentation, 1), before)
