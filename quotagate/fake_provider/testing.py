"""Start a fake provider for a test: in a background thread (fast) or a subprocess (isolated).

    with running_fake_provider(tls=True) as fake:
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test",
                               http_client=httpx.Client(verify=fake.ca_file))
        ...
        assert fake.last_request()["headers"]["authorization"] == "Bearer sk-test"

With ``tls=True`` and no certificate given, a throwaway CA (trustme, a test dependency) signs a
certificate for 127.0.0.1, ::1 and localhost; ``fake.ca_file`` is the CA bundle to trust.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from quotagate.fake_provider.app import build_app
from quotagate.fake_provider.cli import config_to_args
from quotagate.fake_provider.config import FakeConfig
from quotagate.fake_provider.connections import ConnectionLog
from quotagate.fake_provider.recorder import Recorder
from quotagate.fake_provider.server import bind, make_server

_START_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class FakeProvider:
    """A running fake provider."""

    base_url: str  # scheme://host:port, no path: the Anthropic SDK's base_url
    ca_file: str | None  # CA bundle that signed the TLS certificate (None over plain HTTP)
    _recorder: Recorder | None = None  # in-thread servers are read directly, subprocesses over HTTP
    _connections: ConnectionLog | None = None

    @property
    def openai_base_url(self) -> str:
        """The OpenAI SDK's base_url (it expects the /v1 prefix in it)."""
        return self.base_url + "/v1"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What to pass as httpx's ``verify``: a context trusting ``ca_file``, or True."""
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True

    def requests(self) -> list[dict[str, Any]]:
        """Requests received, oldest first: method, path, query, headers (lower-case dict), body, at."""
        if self._recorder is not None:
            return self._recorder.snapshot()
        response = httpx.get(self.base_url + "/_fake/requests", verify=self.verify)
        response.raise_for_status()
        received: list[dict[str, Any]] = response.json()
        return received

    def last_request(self) -> dict[str, Any]:
        received = self.requests()
        if not received:
            raise AssertionError("the fake provider has received no request")
        return received[-1]

    def clear_requests(self) -> None:
        if self._recorder is not None:
            self._recorder.clear()
        else:
            httpx.delete(self.base_url + "/_fake/requests", verify=self.verify).raise_for_status()

    def connections(self) -> dict[str, Any]:
        """Connections accepted so far (``accepted``) and the SNI of each TLS handshake (``tls_server_names``,
        None where a client sent none). Read from a subprocess, the reading's own connection is counted."""
        if self._connections is not None:
            return self._connections.snapshot()
        response = httpx.get(self.base_url + "/_fake/connections", verify=self.verify)
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found

    def clear_connections(self) -> None:
        if self._connections is not None:
            self._connections.clear()
        else:
            httpx.delete(self.base_url + "/_fake/connections", verify=self.verify).raise_for_status()


@dataclass(frozen=True)
class TLSFiles:
    cert: str
    key: str
    ca: str | None


def make_tls_files(directory: Path) -> TLSFiles:
    """A fresh CA and a server certificate for the loopback names, written under ``directory``."""
    import trustme  # test dependency: imported only when a test asks for TLS

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "::1", "localhost")
    files = TLSFiles(str(directory / "server.pem"), str(directory / "server.key"), str(directory / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(files.cert)
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(files.cert, append=True)
    cert.private_key_pem.write_to_path(files.key)
    ca.cert_pem.write_to_path(files.ca or "")
    return files


def _url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


@contextmanager
def running_fake_provider(
    *,
    tls: bool | TLSFiles = False,
    config: FakeConfig | None = None,
    in_subprocess: bool = False,
    host: str = "127.0.0.1",
) -> Iterator[FakeProvider]:
    """A fake provider on a free port for the ``with`` block; stopped afterwards.

    ``tls``: False for HTTP, True for a throwaway trustme CA, or your own ``TLSFiles``.
    ``in_subprocess``: run ``python -m quotagate.fake_provider`` instead of a thread, e.g. for
    benchmarks, so the fake does not share the test process's GIL.
    """
    with ExitStack() as stack:
        files: TLSFiles | None = None
        if tls is True:
            files = make_tls_files(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fake-tls-"))))
        elif isinstance(tls, TLSFiles):
            files = tls
        if in_subprocess:
            yield stack.enter_context(_subprocess(host, files, config or FakeConfig()))
        else:
            yield stack.enter_context(_thread(host, files, config))


@contextmanager
def _thread(host: str, files: TLSFiles | None, config: FakeConfig | None) -> Iterator[FakeProvider]:
    sock = bind(host, 0)
    app = build_app(config)
    server = make_server(app=app, tls_cert=files.cert if files else None, tls_key=files.key if files else None)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fake-provider", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake provider did not start")
            time.sleep(0.005)
        recorder: Recorder = app.state.recorder
        port = sock.getsockname()[1]
        url = _url("https" if files else "http", host, port)
        yield FakeProvider(url, files.ca if files else None, recorder, app.state.connections)
    finally:
        # No graceful drain: idle TLS keep-alive connections would hold it for the close_notify timeout.
        server.force_exit = server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def _subprocess(host: str, files: TLSFiles | None, config: FakeConfig) -> Iterator[FakeProvider]:
    argv = [sys.executable, "-m", "quotagate.fake_provider", "--host", host, "--port", "0", *config_to_args(config)]
    if files:
        argv += ["--tls-cert", files.cert, "--tls-key", files.key]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        url = _read_url(proc.stdout, proc)
        yield FakeProvider(url, files.ca if files else None)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _read_url(stdout: IO[str] | None, proc: subprocess.Popen[str]) -> str:
    line = stdout.readline() if stdout else ""
    marker = "listening on "
    if marker not in line:
        proc.kill()
        raise RuntimeError(f"the fake provider did not start (exit {proc.poll()}): {line!r}")
    return line.split(marker, 1)[1].strip()
