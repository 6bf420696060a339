"""`quotagate serve` as a process behind the real Envoy: graceful shutdown, and failing closed once it is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select

from quotagate.app import open_app
from quotagate.fake_provider.testing import running_fake_provider
from quotagate.settings import load_settings
from quotagate.store.tables import UsageEvent
from tests.support.envoy import (
    RenderOptions,
    free_port,
    prepare_home,
    render_envoy_config,
    running_envoy,
    running_serve_process,
    stack_manifest,
    stored_snapshot,
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
            listen, admin = free_port(), free_port()
            options = RenderOptions(
                listen=("127.0.0.1", listen), grpc_endpoints=(serve.grpc_address,), admin_port=admin
            )
            config = render_envoy_config(stored_snapshot(settings), options)
            with running_envoy(config, workdir=tmp_path / "envoy", listen_port=listen, admin_port=admin) as envoy:
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
