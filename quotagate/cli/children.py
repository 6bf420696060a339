"""Child processes of `quotagate up`: started with their logs in files, stopped gently, then firmly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx

from quotagate.errors import ConfigError


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) arrived while a child was starting."""


class Child:
    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = stop or threading.Event()  # set: waiting for start-up gives up (Interrupted)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # Own process group: Ctrl-C reaches `up`, which then stops children in order (Envoy first).
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def fail(self, what: str) -> ConfigError:
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:] if self.log_path.exists() else []
        detail = f": {tail[-1]}" if tail else ""
        return ConfigError(f"{self.name} {what}{detail} (log: {self.log_path})")

    def wait_port(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_starting()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                self._stop.wait(0.05)
        raise self.fail(f"did not open port {port} within {timeout:.0f}s")

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_starting()
            try:
                if httpx.get(url, timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            self._stop.wait(0.1)
        raise self.fail(f"was not ready at {url} within {timeout:.0f}s")

    def _check_starting(self) -> None:
        if self._stop.is_set():
            raise Interrupted(self.name)
        if not self.alive():
            raise self.fail("exited during start-up")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def ensure_free(host: str, port: int, what: str) -> None:
    """A clear one-line error when a port is taken, before anything starts."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise ConfigError(
                f"port {port} on {host} ({what}) is already in use; pick another with its option"
            ) from None
