"""The reusable pieces: the test helper (thread and subprocess), the CLI options, the ASGI app alone."""

from __future__ import annotations

import argparse

import anthropic
import httpx
import openai
import pytest

from quotagate.fake_provider import Behaviour, FakeConfig, build_app
from quotagate.fake_provider.behaviour import FIELD_NAMES, header_name
from quotagate.fake_provider.cli import add_arguments, config_from_args, config_to_args, register
from quotagate.fake_provider.testing import running_fake_provider

CONFIG = FakeConfig(
    defaults=Behaviour(output_tokens=3, ttft_ms=1.5, garbage=False, error_type="x"),
    record_limit=7,
    api_keys=frozenset({"k1", "k2"}),
    models=("m1", "m2"),
)


def test_config_round_trips_through_cli_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(config_to_args(CONFIG))) == CONFIG
    assert config_from_args(parser.parse_args([])) == FakeConfig()


def test_every_knob_has_a_cli_option_and_header() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    help_text = parser.format_help()
    for name in FIELD_NAMES:
        assert "--" + name.replace("_", "-") in help_text
        assert header_name(name) in help_text


def test_register_adds_the_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="quotagate")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["fake-provider", "--port", "0", "--ttft-ms", "20"])
    assert args.port == 0
    assert config_from_args(args).defaults.ttft_ms == 20.0
    assert callable(args.func)


def test_subprocess_over_tls_with_sdks() -> None:
    config = FakeConfig(defaults=Behaviour(output_tokens=4))
    with running_fake_provider(tls=True, config=config, in_subprocess=True) as fake:
        assert fake.base_url.startswith("https://127.0.0.1:")
        with httpx.Client(verify=fake.verify) as http:
            oai = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-1", http_client=http, max_retries=0)
            reply = oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            assert reply.usage is not None
            assert reply.usage.completion_tokens == 4
            ant = anthropic.Anthropic(base_url=fake.base_url, api_key="sk-2", http_client=http, max_retries=0)
            message = ant.messages.create(model="c", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
            assert message.usage.output_tokens == 4
        seen = fake.requests()  # over HTTP, from the other process
        assert [item["headers"].get("authorization") for item in seen] == ["Bearer sk-1", None]
        assert seen[1]["headers"]["x-api-key"] == "sk-2"
        fake.clear_requests()
        assert fake.requests() == []


def test_plain_http_has_no_ca() -> None:
    with running_fake_provider() as fake:
        assert fake.ca_file is None
        assert fake.verify is True
        assert httpx.get(fake.base_url + "/_fake/health").json() == {"status": "ok"}


async def test_build_app_runs_in_process() -> None:
    """The bare ASGI app works without a server (httpx's ASGI transport), e.g. for unit tests."""
    app = build_app(FakeConfig(defaults=Behaviour(output_tokens=2)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake") as client:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        response = await client.post("/v1/chat/completions", json=body)
        assert response.json()["usage"]["completion_tokens"] == 2
        stream = await client.post("/v1/messages", json={**body, "max_tokens": 9, "stream": True})
        assert stream.text.count("event: content_block_delta") == 2
    assert len(app.state.recorder.snapshot()) == 2


def test_tls_needs_both_files() -> None:
    from quotagate.fake_provider.server import make_server

    with pytest.raises(ValueError, match="both"):
        make_server(tls_cert="cert.pem")
