"""`quotagate up --demo` from a fresh home: the printed snippet works (streaming too) and usage is reported."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.envoy import prepare_home, stack_manifest
from tests.support.pg import PgDatabases
from tests.support.scaled import (
    chat_statuses,
    decisions,
    free_ports_in_a_row,
    rpm_limit,
    same_minute_ahead,
    shared_backends,
)
from tests.support.throwaway import free_port, wait_port

pytestmark = pytest.mark.envoy


def _start_up(home: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], list[str]]:
    env = env or {**os.environ, "QUOTAGATE_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "quotagate", "up", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 90
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "Press Ctrl-C to stop." in line:
            return proc, lines
    proc.kill()
    raise AssertionError("up did not come up:\n" + "\n".join(lines))


def test_up_demo_runs_the_printed_snippet(tmp_path: Path) -> None:
    port = free_port()
    ports = [
        "--listen",
        f"127.0.0.1:{port}",
        "--grpc-port",
        str(free_port()),
        "--http-port",
        str(free_port()),
        "--admin-port",
        str(free_port()),
    ]
    proc, lines = _start_up(tmp_path / "home", "--demo", *ports)
    try:
        text = "\n".join(lines)
        credential = re.search(r"Demo key \(shown once\): (\S+)", text)
        base = re.search(r'base_url="([^"]+)"', text)
        metrics = re.search(r"metrics: (http://\S+/metrics)$", text, re.M)
        assert credential and base and metrics, text
        assert f"http://127.0.0.1:{port}/v1" == base.group(1)
        # Exactly what the snippet says, plus max_retries=0 so a failure shows at once.
        client = openai.OpenAI(base_url=base.group(1), api_key=credential.group(1), max_retries=0)
        r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])
        assert r.choices[0].message.content and r.usage is not None
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], stream=True
            )
        )
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=base.group(1), api_key="demo-key.wrong-secret-000000000000", max_retries=0
            ).models.list()
        counted = httpx.get(metrics.group(1)).text  # the printed metrics URL serves what this worker counted
        assert re.search(r'^quotagate_requests_total\{.*route="openai.chat.completions".*\} 2\.0$', counted, re.M)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "quotagate up: stopped" in out
    report = subprocess.run(
        [sys.executable, "-m", "quotagate", "usage", "report", "--by", "key,model", "--json"],
        env={**os.environ, "QUOTAGATE_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(report.stdout)["rows"]
    assert rows == [{**rows[0], "key": "demo-key", "model": "gpt-4o-mini", "requests": 2}]
    expected = rows[0]["input_tokens"] * 150 + rows[0]["output_tokens"] * 600  # nanos at 0.15/0.60 per 1M
    assert rows[0]["cost_nanos"] == expected


def test_up_refuses_a_busy_port_with_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "quotagate", "up", "--listen", f"127.0.0.1:{port}"],
            env={**os.environ, "QUOTAGATE_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"quotagate: error: port {port} on 127.0.0.1 (gateway listener) is already in use; pick another with its option"
    )


def test_up_refuses_a_bad_manifest(tmp_path: Path) -> None:
    bad = Path(__file__).parents[1] / "manifest" / "bad" / "duplicate-key-id.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "quotagate", "up", "--manifest", str(bad)],
        env={**os.environ, "QUOTAGATE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "duplicate key id 'da-sk-acme-team'" in result.stderr


def _up_once(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quotagate", "up", *args],
        env={**os.environ, "QUOTAGATE_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_up_refuses_a_missing_envoy_binary_with_one_clear_line(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere" / "envoy"
    result = _up_once(tmp_path / "home", QUOTAGATE_ENVOY_BINARY=str(nowhere))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"quotagate: error: QUOTAGATE_ENVOY_BINARY={nowhere} is not an executable file"
    ]


def test_up_refuses_workers_on_the_embedded_backends_with_one_clear_line(tmp_path: Path) -> None:
    result = _up_once(tmp_path / "home", "--workers", "2")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("quotagate: error: --workers > 1 needs shared backends: set QUOTAGATE_REDIS_URL")


def test_ctrl_c_while_up_waits_for_envoy_stops_everything_at_once(tmp_path: Path) -> None:
    """An "Envoy" that never becomes ready: `up` waits for its health; Ctrl-C must not wait out the timeout."""
    started = tmp_path / "envoy.pid"
    hanging = tmp_path / "hanging-envoy"
    hanging.write_text(f"#!/bin/sh\necho $$ > {started}\nexec sleep 300\n")
    hanging.chmod(0o755)
    grpc_port, http_port = free_port(), free_port()
    ports = ["--listen", f"127.0.0.1:{free_port()}", "--grpc-port", str(grpc_port), "--http-port", str(http_port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "quotagate", "up", *ports, "--admin-port", str(free_port())],
        env={**os.environ, "QUOTAGATE_HOME": str(tmp_path / "home"), "QUOTAGATE_ENVOY_BINARY": str(hanging)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not (started.exists() and started.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=10)
            time.sleep(0.05)
        envoy_pid = int(started.read_text())
        proc.send_signal(signal.SIGINT)
        interrupted_at = time.monotonic()
        _, err = proc.communicate(timeout=25)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - interrupted_at < 20  # the health wait (30 s) was abandoned at once
    assert proc.returncode == 130
    assert "quotagate up: interrupted during start-up; stopped" in err
    with pytest.raises(ProcessLookupError):
        os.kill(envoy_pid, 0)
    for port in (grpc_port, http_port):  # `serve` stopped too
        wait_port(port, timeout=5, up=False)


@pytest.mark.postgres
def test_up_with_two_workers_on_postgres_and_redis_enforces_one_limit(
    tmp_path: Path, pg_databases: PgDatabases
) -> None:
    from quotagate.fake_provider.testing import running_fake_provider

    with running_fake_provider() as fake, shared_backends(tmp_path, pg_databases) as shared:
        credential = prepare_home(
            shared.settings, stack_manifest(fake.base_url.removeprefix("http://"), edit=rpm_limit(3)), "demo-key"
        )
        listen = free_port()
        grpc_port, http_port = free_ports_in_a_row(2), free_ports_in_a_row(2)
        args = ["--workers", "2", "--listen", f"127.0.0.1:{listen}", "--grpc-port", str(grpc_port)]
        args += ["--http-port", str(http_port), "--admin-port", str(free_port())]
        proc, lines = _start_up(tmp_path / "home", *args, env=shared.env)
        try:
            banner = "\n".join(lines)
            metrics = re.search(r"metrics: (\S+)  (\S+)$", banner, re.M)
            assert metrics, banner
            same_minute_ahead(10)  # the six requests must share one RPM window
            statuses = chat_statuses(f"http://127.0.0.1:{listen}", credential, 6)
            assert sorted(statuses) == [200, 200, 200, 429, 429, 429], statuses
            for url in metrics.groups():
                assert decisions(url) > 0, f"{url}: this worker decided nothing"
        finally:
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        for port in (listen, grpc_port, grpc_port + 1, http_port, http_port + 1):
            wait_port(port, timeout=5, up=False)
