"""`quotagate serve` as a process behind the real Envoy: graceful shutdown, failing closed once it is gone, and
`--workers N` supervising N processes that share one limit."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select

from quotagate.app import open_app
from quotagate.fake_provider.testing import running_fake_provider
from quotagate.settings import load_settings
from quotagate.store.tables import UsageEvent
from tests.support.envoy import (
    prepare_home,
    running_front_envoy,
    running_serve_process,
    stack_manifest,
    stored_snapshot,
)
from tests.support.pg import PgDatabases
from tests.support.scaled import (
    chat_statuses,
    decisions,
    free_ports_in_a_row,
    rpm_limit,
    same_minute_ahead,
    shared_backends,
)

pytestmark = pytest.mark.envoy
PROMPT = [{"role": "user", "content": "Count slowly."}]


def test_health_then_sigterm_lets_a_stream_finish_records_it_then_envoy_fails_closed(tmp_path: Path) -> None:
    with running_fake_provider() as fake:
        settings = load_settings(home=tmp_path / "home")
        credential = prepare_home(settings, stack_manifest(fake.base_url.removeprefix("http://")), "demo-key")
        with running_serve_process(tmp_path / "home", log_path=tmp_path / "serve.log") as serve:
            with grpc.insecure_channel(serve.grpc_address) as channel:  # health shares the port
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            snapshot = stored_snapshot(settings)
            with running_front_envoy(snapshot, tmp_path / "envoy", grpc_endpoints=(serve.grpc_address,)) as envoy:
                client = openai.OpenAI(base_url=envoy.url + "/v1", api_key=credential, max_retries=0)
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini",
                    messages=PROMPT,
                    stream=True,
                    extra_headers={"x-fake-chunk-delay-ms": "40", "x-fake-output-tokens": "25"},
                )
                stream = iter(raw.parse())
                next(stream)  # the response is flowing: now ask the server to stop
                serve.process.send_signal(signal.SIGTERM)
                chunks = list(stream)
                assert chunks[-1].usage is not None  # the stream ran to its end through the shutdown
                assert serve.process.wait(timeout=30) == 0

                with pytest.raises(openai.InternalServerError) as caught:
                    client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
                assert caught.value.status_code == 503
                body = caught.value.response.json()
                assert "authorization service is unavailable" in body["error"]["message"]
                assert body["error"]["code"] == "ext_authz_error"

    app = open_app(settings)  # the last usage event was written before the process exited
    try:
        with app.db.read() as session:
            event = session.scalars(
                select(UsageEvent).where(UsageEvent.request_id == raw.headers["x-quotagate-request-id"])
            ).one()
    finally:
        app.close()
    assert (event.status, event.output_tokens, event.error) == (200, 25, None)


def test_serve_refuses_a_busy_address(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path / "home")
    prepare_home(settings, stack_manifest("127.0.0.1:9"), "demo-key")
    with running_serve_process(tmp_path / "home", log_path=tmp_path / "serve.log") as first:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTAGATE_")}
        result = subprocess.run(
            [sys.executable, "-m", "quotagate", "serve", "--grpc", first.grpc_address],
            capture_output=True,
            text=True,
            env={**env, "QUOTAGATE_HOME": str(tmp_path / "home")},
            timeout=60,
        )
    assert result.returncode == 1
    assert f"quotagate: error: cannot listen on {first.grpc_address}" in result.stderr


# -- `serve --workers N`: a supervisor of N processes on PostgreSQL + Redis


@dataclass
class Supervised:
    """`quotagate serve --workers N` running: its stdout (the workers' lines) and stderr (its own) in files."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def wait_for(self, pattern: str, count: int = 1, timeout_s: float = 60.0) -> list[re.Match[str]]:
        deadline = time.monotonic() + timeout_s
        while len(found := list(re.finditer(pattern, self.text()))) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} x{count} not seen (exit {self.process.poll()}):\n{self.text()}")
            time.sleep(0.05)
        return found

    def worker_pid(self, index: int) -> int:
        return int(self.wait_for(rf"worker {index} started \(pid (\d+)\)")[-1].group(1))


@contextmanager
def supervising(workdir: Path, env: dict[str, str], *args: str) -> Iterator[Supervised]:
    out, err = workdir / "serve.out", workdir / "serve.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "quotagate", "serve", "--grace", "5", *args], stdout=stdout, stderr=stderr, env=env
        )
    try:
        yield Supervised(process, out, err)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _ready(http: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"http://{http}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{http} was never ready")
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.postgres
def test_two_workers_share_one_limit_a_dead_one_is_restarted_and_sigterm_stops_both(
    tmp_path: Path, pg_databases: PgDatabases
) -> None:
    with running_fake_provider() as fake, shared_backends(tmp_path, pg_databases) as shared:
        manifest = stack_manifest(fake.base_url.removeprefix("http://"), edit=rpm_limit(3))
        credential = prepare_home(shared.settings, manifest, "demo-key")
        grpc, http = free_ports_in_a_row(2), free_ports_in_a_row(2)
        with supervising(
            tmp_path, shared.env, "--grpc", f"127.0.0.1:{grpc}", "--http", f"127.0.0.1:{http}", "--workers", "2"
        ) as serve:
            serve.wait_for("gRPC listening on", count=2)
            https = [f"127.0.0.1:{http + i}" for i in range(2)]
            metrics = [f"http://{address}/metrics" for address in https]
            for address in https:
                _ready(address)
            grpcs = (f"127.0.0.1:{grpc}", f"127.0.0.1:{grpc + 1}")
            snapshot = stored_snapshot(shared.settings)
            with running_front_envoy(snapshot, tmp_path / "envoy", grpc_endpoints=grpcs) as envoy:
                same_minute_ahead(10)
                statuses = chat_statuses(envoy.url, credential, 6, PROMPT)
                assert sorted(statuses) == [200, 200, 200, 429, 429, 429], statuses  # one limit for both
                assert all(decisions(url) > 0 for url in metrics), "Envoy used both workers"

                first = serve.worker_pid(1)
                os.kill(first, signal.SIGKILL)
                serve.wait_for(rf"worker 1 \(pid {first}\) exited with code -9; restarting it in")
                serve.wait_for(r"worker 1 started", count=2)
                _ready(https[1])
                assert serve.worker_pid(1) != first
                deadline = time.monotonic() + 30  # until Envoy's health check takes the new process back
                while decisions(metrics[1]) == 0:
                    assert time.monotonic() < deadline, "the restarted worker never decided"
                    assert set(chat_statuses(envoy.url, credential, 2, PROMPT)) <= {200, 429}

            pids = [serve.worker_pid(i) for i in range(2)]
            serve.process.send_signal(signal.SIGTERM)
            assert serve.process.wait(timeout=40) == 0, serve.text()
            assert all(_gone(pid) for pid in pids)
            assert serve.text().count("quotagate serve: stopped") == 2


@pytest.mark.postgres
def test_a_worker_that_cannot_start_stops_the_others_and_the_supervisor_fails(
    tmp_path: Path, pg_databases: PgDatabases
) -> None:
    with shared_backends(tmp_path, pg_databases) as shared, socket.socket() as busy:
        prepare_home(shared.settings, stack_manifest("127.0.0.1:9"), "demo-key")
        grpc = free_ports_in_a_row(2)
        busy.bind(("127.0.0.1", grpc + 1))  # worker 1's port
        busy.listen()
        with supervising(tmp_path, shared.env, "--grpc", f"127.0.0.1:{grpc}", "--workers", "2") as serve:
            assert serve.process.wait(timeout=60) == 1, serve.text()
            first = serve.worker_pid(0)
        assert "worker 1 exited with code 1 before it was listening; stopping every worker" in serve.text()
        assert _gone(first)


def test_workers_on_the_embedded_backends_are_refused_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTAGATE_")}
    result = subprocess.run(
        [sys.executable, "-m", "quotagate", "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        env={**env, "QUOTAGATE_HOME": str(tmp_path / "home")},
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "quotagate: error: --workers > 1 needs shared backends: set QUOTAGATE_REDIS_URL (counters) and a PostgreSQL "
        "QUOTAGATE_DATABASE_URL (config, usage, ledger); the embedded SQLite + in-process counters serve one process"
    ]
