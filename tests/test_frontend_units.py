"""The frontend's Vitest unit tests, run from pytest so that `make test` covers them, and the agreement of the
TypeScript codecs (frontend/src/interactive/frame.ts, frontend/src/labelmap/npy.ts) with the Python ones: this
side writes frames and labelmaps for Vitest to decode, and decodes what Vitest encoded from them."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from tests.conftest import ROOT, require
from webapp.interactive.protocol import MaskFrame, decode_frame, encode_frame
from webapp.segmentations.labelmap_io import read_labelmap, write_labelmap

FRONTEND = ROOT / "frontend"


def _frames() -> list[MaskFrame]:
    rng = np.random.default_rng(7)
    k, j, i = np.ogrid[:20, :33, :47]
    ball = (k - 9) ** 2 + (j - 15) ** 2 + (i - 30) ** 2 < 8**2
    return [
        MaskFrame(7, (1, 2, 3), (4, 7, 12), rng.random((3, 5, 9)) < 0.5),
        MaskFrame(0, (0, 0, 0), (2, 3, 5), rng.random((2, 3, 5)) < 0.3, replace=True),  # 30 bits: padding
        MaskFrame(2**32 - 1, (3, 3, 3), (3, 3, 3), np.zeros((0, 0, 0), dtype=bool)),
        MaskFrame(9, (0, 0, 0), (20, 33, 47), ball, replace=True),
    ]


def _labelmaps() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(8)
    return {
        "u8_kji": rng.integers(0, 4, (3, 4, 5), dtype=np.uint8),
        "u16_layers": rng.integers(0, 1000, (2, 3, 4, 5)).astype(np.uint16),
        "u16_big_endian": rng.integers(0, 70000, (1, 2, 3, 3)).astype(np.uint16).astype(">u2"),
    }


def _vitest_command() -> list[str]:
    # `npm test` needs node_modules/.bin, which some installs (copied node_modules) lack: vitest's own entry
    # point is the same program.
    if (FRONTEND / "node_modules" / ".bin" / "vitest").exists():
        return ["npm", "test", "--silent"]
    return ["node", "node_modules/vitest/vitest.mjs", "run"]


def test_frontend_unit_tests(tmp_path: Path) -> None:
    require(shutil.which("node") is not None and shutil.which("npm") is not None, "node and npm are missing")
    require(
        (FRONTEND / "node_modules" / "vitest").is_dir(),
        "frontend dependencies missing: cd frontend && npm ci",
    )
    fixtures, output = tmp_path / "fixtures", tmp_path / "from-frontend"
    fixtures.mkdir()

    frames = {f"frame{n}": frame for n, frame in enumerate(_frames())}
    for name, frame in frames.items():
        (fixtures / f"{name}.avxm").write_bytes(encode_frame(frame))
    described = [
        {
            "name": name,
            "request": frame.request,
            "start": list(frame.start),
            "stop": list(frame.stop),
            "replace": frame.replace,
            "mask": "".join("1" if v else "0" for v in frame.mask.ravel()),
        }
        for name, frame in frames.items()
    ]
    (fixtures / "frames.json").write_text(json.dumps(described))

    labelmaps = _labelmaps()
    files = {"u8_kji": "u8_kji.npy", "u16_layers": "u16_layers.npy.gz", "u16_big_endian": "u16_be.npy"}
    for name, array in labelmaps.items():
        data = write_labelmap(array) if files[name].endswith(".gz") else _npy(array)
        (fixtures / files[name]).write_bytes(data)
    (fixtures / "labelmaps.json").write_text(
        json.dumps(
            [
                {
                    "name": name,
                    "file": files[name],
                    "dtype": array.dtype.newbyteorder("=").name,
                    "shape": list(array.shape),
                    "values": [int(v) for v in array.ravel()],
                }
                for name, array in labelmaps.items()
            ]
        )
    )

    env = {**os.environ, "ANNOVOX_FRONTEND_FIXTURES": str(fixtures), "ANNOVOX_FRONTEND_OUTPUT": str(output)}
    env.pop("NODE_OPTIONS", None)
    run = subprocess.run(
        _vitest_command(), cwd=FRONTEND, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]

    # What the TypeScript side encoded, read by the server's decoders.
    for name, frame in frames.items():
        back = decode_frame((output / f"{name}.avxm").read_bytes(), frame.stop)
        assert (back.request, back.start, back.stop, back.replace) == (
            frame.request,
            frame.start,
            frame.stop,
            frame.replace,
        )
        assert np.array_equal(back.mask, frame.mask), name
    for name, array in labelmaps.items():
        layers = array if array.ndim == 4 else array[np.newaxis]
        shape = (layers.shape[1], layers.shape[2], layers.shape[3])
        for suffix in (".npy.gz", ".npy"):
            data = (output / f"{name}{suffix}").read_bytes()
            back = read_labelmap(data, shape, max_bytes=1 << 20)
            assert back.dtype == layers.dtype.newbyteorder("="), name + suffix
            assert np.array_equal(back, layers), name + suffix
        plain = np.load(output / f"{name}.npy", allow_pickle=False)  # as written, [k, j, i] stays so
        assert plain.dtype.str in ("|u1", "<u2") and np.array_equal(plain, array), name


def _npy(array: np.ndarray) -> bytes:
    """np.save's bytes, uncompressed, in the array's own byte order."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
