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

import openai
import pytest

from tests.support.throwaway import free_port

pytestmark = pytest.mark.envoy


def _start_up(home: Path, *extra: str) -> tuple[subprocess.Popen[str], list[str]]:
    env = {**os.environ, "QUOTAGATE_HOME": str(home)}
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
        assert credential and base, text
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
