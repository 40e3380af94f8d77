"""Live servers for interoperability tests and benchmarks: Annovox under Daphne, and Orthanc.

Both listen on free loopback ports and keep everything they write in a folder the caller owns, so several can
run side by side and nothing touches the developer's ``./data`` or the test database.

- :class:`AnnovoxServer` runs ``daphne webapp.asgi:application`` in a subprocess with its own
  ``ANNOVOX_DATA_DIR``. Its database is a fresh SQLite file in that folder (``DATABASE_URL`` is removed from
  the subprocess environment), or, with ``database_url``, any database the caller owns, e.g. one made by
  :func:`temporary_postgres_database`. ``REDIS_URL`` is removed too: plain HTTP needs no channel layer.
  Start-up migrates the database, creates a user and issues an API token (``manage.py issue_token``).
- :class:`OrthancServer` runs Debian's ``Orthanc`` with its DICOMweb plugin, configured from the loopback
  configuration in ``../shared/data/tools/orthanc.json`` with the ports and storage folders replaced.

Both are context managers and stop their process on exit. A few small DICOMweb client helpers (STOW-RS,
multipart parsing) that the tests and ``bench/dicomweb.py`` share live here too.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
ORTHANC_CONFIG = SHARED_DATA / "tools" / "orthanc.json"
HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """A server did not start; the message includes the end of its log."""


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def _wait_for_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"{what} exited with status {process.returncode}:\n{_log_tail(log)}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise ServerError(f"{what} did not answer at {url} within {timeout:.0f} s:\n{_log_tail(log)}")


# --- Orthanc ------------------------------------------------------------------------------------------------


def _orthanc_base_config() -> dict[str, Any]:
    return dict(json.loads(ORTHANC_CONFIG.read_text()))


def orthanc_binary() -> str | None:
    """The Orthanc executable: ``ORTHANC_BINARY`` or ``Orthanc`` on the PATH; None when there is none."""
    return shutil.which(os.environ.get("ORTHANC_BINARY") or "Orthanc")


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin named in the shared loopback configuration (or ``ORTHANC_DICOMWEB_PLUGIN``)."""
    if override := os.environ.get("ORTHANC_DICOMWEB_PLUGIN"):
        return Path(override)
    if not ORTHANC_CONFIG.is_file():
        return None
    plugins = [Path(p) for p in _orthanc_base_config().get("Plugins", []) if "DicomWeb" in p]
    return plugins[0] if plugins else None


def orthanc_missing_reason() -> str | None:
    """Why Orthanc with DICOMweb cannot be started here, or None when it can."""
    if not ORTHANC_CONFIG.is_file():
        return f"the Orthanc configuration {ORTHANC_CONFIG} is missing"
    if orthanc_binary() is None:
        return "the Orthanc binary is not installed (Debian package 'orthanc')"
    plugin = dicomweb_plugin()
    if plugin is None or not plugin.is_file():
        return f"the Orthanc DICOMweb plugin {plugin} is missing (Debian package 'orthanc-dicomweb')"
    return None


class LiveServer:
    """A server process on free loopback ports, with its output in ``log``; stopped on exit."""

    name = "server"
    dicomweb_path = "/dicomweb"

    def __init__(self, log: Path, startup_timeout: float) -> None:
        self.log = log
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0  # HTTP

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        """Root of the DICOMweb services, without a trailing slash."""
        return f"{self.url}{self.dicomweb_path}"

    def headers(self) -> dict[str, str]:
        """Headers every request needs (authentication)."""
        return {}

    def _launch(self, command: Callable[[], list[str]], ready_path: str, **popen: Any) -> None:
        """Run ``command()`` until it answers at ``ready_path``; each try picks fresh ports."""
        for attempt in range(3):
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(command(), stdout=log, stderr=subprocess.STDOUT, **popen)
            try:
                _wait_for_http(
                    f"{self.url}{ready_path}", self.process, self.log, self.startup_timeout, self.name
                )
                return
            except ServerError:
                _stop_process(self.process)
                if attempt == 2:  # a port taken between choosing and binding: try other ports
                    raise

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        _stop_process(self.process)
        self.process = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class OrthancServer(LiveServer):
    """Orthanc with its DICOMweb plugin on free loopback ports, storing into ``workdir``."""

    name = "Orthanc"
    dicomweb_path = "/dicom-web"

    def __init__(self, workdir: Path, *, dicom_server: bool = True, startup_timeout: float = 30) -> None:
        super().__init__(Path(workdir) / "orthanc.log", startup_timeout)
        self.workdir = Path(workdir)
        self.dicom_server = dicom_server
        self.dicom_port = 0
        self.aet = "ORTHANC"

    def _configure(self, binary: str, storage: Path) -> list[str]:
        self.port, self.dicom_port = free_port(), free_port()
        config = _orthanc_base_config()
        config.update(
            StorageDirectory=str(storage),
            IndexDirectory=str(storage),
            HttpPort=self.port,
            DicomPort=self.dicom_port,
            DicomServerEnabled=self.dicom_server,
        )
        config["Plugins"] = [str(dicomweb_plugin())]
        config["DicomWeb"] = {**config.get("DicomWeb", {}), "Host": f"{HOST}:{self.port}"}
        self.aet = str(config.get("DicomAet", "ORTHANC"))
        config_file = self.workdir / "orthanc.json"
        config_file.write_text(json.dumps(config, indent=2))
        return [binary, str(config_file)]

    def start(self) -> Self:
        reason = orthanc_missing_reason()
        binary = orthanc_binary()
        if reason or binary is None:
            raise ServerError(reason or "no Orthanc binary")
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        self._launch(lambda: self._configure(binary, storage), "/system", cwd=self.workdir)
        return self

    def statistics(self) -> dict[str, Any]:
        response = requests.get(f"{self.url}/statistics", timeout=30)
        response.raise_for_status()
        return dict(response.json())


# --- Annovox ------------------------------------------------------------------------------------------------


@contextmanager
def temporary_postgres_database(server_url: str, prefix: str = "annovox_tmp") -> Iterator[str]:
    """Create an empty database on the PostgreSQL server of ``server_url`` and drop it afterwards.

    Yields the URL of the new database. The role in ``server_url`` needs the CREATEDB privilege.
    """
    import psycopg
    from psycopg import sql

    parts = urlsplit(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin_url = urlunsplit(parts._replace(path="/postgres", query=""))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def database_like_ci(prefix: str = "annovox_tmp") -> Iterator[str | None]:
    """A temporary database on the PostgreSQL server of ``DATABASE_URL`` when that names one (as in CI),
    dropped afterwards; else None, which gives a server its own SQLite file."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        with temporary_postgres_database(url, prefix=prefix) as database_url:
            yield database_url
    else:
        yield None


class AnnovoxServer(LiveServer):
    """Annovox served by Daphne on a free loopback port, with its own data folder and database.

    ``database_url=None`` uses a fresh SQLite database inside ``data_dir`` (the embedded default).
    """

    name = "Daphne"

    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        username: str = "interop",
        extra_env: dict[str, str] | None = None,
        startup_timeout: float = 60,
    ) -> None:
        super().__init__(Path(data_dir) / "daphne.log", startup_timeout)
        self.data_dir = Path(data_dir)
        self.database_url = database_url
        self.username = username
        self.extra_env = dict(extra_env or {})
        self.token = ""
        self.workers: list[subprocess.Popen[bytes]] = []

    @property
    def database(self) -> str:
        return "PostgreSQL" if self.database_url else "SQLite"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        env.update(
            ANNOVOX_DATA_DIR=str(self.data_dir),
            DJANGO_SETTINGS_MODULE="webapp.settings",
            PYTHONUNBUFFERED="1",
        )
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def manage(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run ``manage.py ARGS`` against this server's data folder and database."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise ServerError(
                f"manage.py {' '.join(args)} failed with status {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def _prepare(self) -> None:
        """Migrate, create the user and issue its token: one Django start-up instead of three."""
        code = (
            "from django.contrib.auth import get_user_model\n"
            "from django.core.management import call_command\n"
            "call_command('migrate', interactive=False, verbosity=0)\n"
            f"user = get_user_model().objects.create_user({self.username!r}, password=None)\n"
            "from django.contrib.auth.models import Permission\n"
            "user.user_permissions.add(Permission.objects.get(codename='view_series'))\n"
            f"call_command('issue_token', {self.username!r}, name='live test server')\n"
        )
        output = self.manage("shell", "--no-imports", "-c", code).stdout.strip()
        self.token = output.splitlines()[-1].strip()

    def _command(self, port: int | None = None) -> list[str]:
        self.port = port or free_port()
        return [sys.executable, "-m", "daphne", "-b", HOST, "-p", str(self.port), "webapp.asgi:application"]

    def restart(self) -> None:
        """Kill Daphne (and its in-process worker) and start it again on the same port and data, as after a
        crash: connected browsers lose their WebSocket and must reconnect."""
        self.crash()
        self.recover()

    def crash(self) -> None:
        """Kill Daphne and its in-process worker; ``recover`` starts it again."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=30)

    def recover(self) -> None:
        """Start Daphne again after ``crash``, on the same port and data."""
        port = self.port
        self._launch(lambda: self._command(port), "/accounts/login/", cwd=ROOT, env=self.env())

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        self._launch(self._command, "/accounts/login/", cwd=ROOT, env=self.env())
        return self

    @property
    def websocket_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws/interactive/"

    def start_worker(self, *args: str, timeout: float = 120) -> subprocess.Popen[bytes]:
        """``manage.py inference_worker ARGS`` against this server's database and channel layer, once it has
        registered; the caller stops it (it also stops with the server)."""
        log = self.data_dir / f"worker-{len(self.workers)}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "manage.py", "inference_worker", *args],
                cwd=ROOT,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.workers.append(process)
        deadline = time.monotonic() + timeout
        while "ready" not in _log_tail(log):
            if process.poll() is not None or time.monotonic() > deadline:
                _stop_process(process)
                raise ServerError(f"the inference worker did not start:\n{_log_tail(log)}")
            time.sleep(0.1)
        return process

    def stop(self) -> None:
        for process in self.workers:
            _stop_process(process)
        self.workers.clear()
        super().stop()


# --- DICOMweb client helpers --------------------------------------------------------------------------------


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file (preamble and ``DICM``)."""
    with path.open("rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def shared_dicom_files(data_dir: Path = SHARED_DATA) -> list[tuple[str, bytes]]:
    """Every DICOM file under ``data_dir`` as (path relative to it, bytes), in a fixed order.

    ``.dcm.gz`` files are inflated (Orthanc stores only plain DICOM); other files without the ``DICM``
    preamble (NIfTI, TIFF, NRRD, text) are left out.
    """
    files = []
    for path in sorted(data_dir.rglob("*")):
        if not path.is_file():
            continue
        if path.name.endswith(".dcm.gz"):
            data = gzip.decompress(path.read_bytes())
        elif is_dicom_file(path):
            data = path.read_bytes()
        else:
            continue
        files.append((path.relative_to(data_dir).as_posix(), data))
    return files


def multipart_body(parts: Iterable[bytes], content_type: str = "application/dicom") -> tuple[bytes, str]:
    """A ``multipart/related`` body and its Content-Type header value."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for part in parts:
        chunks += [f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode(), part, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="{content_type}"; boundary={boundary}'


def stow(
    session: requests.Session, dicomweb_url: str, payloads: Sequence[bytes], headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    """POST ``payloads`` to ``{dicomweb_url}/studies``; returns the status and the DICOM JSON response."""
    body, content_type = multipart_body(payloads)
    response = session.post(
        f"{dicomweb_url}/studies",
        data=body,
        headers={**headers, "Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=600,
    )
    try:
        document = response.json() if response.content.strip() else {}
    except ValueError:
        document = {}
    return response.status_code, document if isinstance(document, dict) else {}


def parse_multipart(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a ``multipart/related`` response into (headers, content) parts."""
    match = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    if not match:
        raise ValueError(f"no boundary in Content-Type {content_type!r}")
    delimiter = b"--" + match.group(1).encode()
    parts: list[tuple[dict[str, str], bytes]] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, _, content = chunk.partition(b"\r\n\r\n")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts
