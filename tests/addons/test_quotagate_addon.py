"""The addon's hooks under mitmproxy's test harness: the Envoy path's decisions, applied to flows."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from mitmproxy import connection, exceptions, flow, hooks, http
from mitmproxy.proxy import server_hooks
from mitmproxy.test import taddons, tflow

from addons.quotagate_flows import UNROUTED, passthrough
from addons.quotagate_gateway import LAZY_NEEDED, QuotagateAddon
from addons.quotagate_report import DENIED_MARK, ESTIMATED_MARK
from quotagate.gateway.outcome import CheckInput, Deny, Outcome
from quotagate.snapshot import Snapshot, UpstreamView
from quotagate.store.tables import UsageEvent
from tests.addons.conftest import (
    ANTHROPIC_KEY,
    CHAT,
    OPENAI_KEY,
    Gateway,
    configure_all,
    demo_manifest,
    gateway_flow,
    proxy_options,
    start_gateway,
    upstream_response,
    write,
)

CHAT_STREAM = (
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,'
    b'"delta":{"content":"Hi there"},"finish_reason":null}],"usage":null}\n\n',
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,'
    b'"delta":{},"finish_reason":"stop"}],"usage":null}\n\n',
    b'data: {"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}\n\n',
    b"data: [DONE]\n\n",
)
CHAT_JSON = orjson.dumps(
    {
        "id": "c2",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
)
# gpt-4o-mini: 0.15 / 0.60 usd per 1M tokens -> 9 * 150 + 2 * 600 nanos
CHAT_COST_NANOS = 9 * 150 + 2 * 600


def events(gw: Gateway) -> dict[str, UsageEvent]:
    gw.runtime.writer.flush()
    with gw.runtime.app.db.read() as session:
        return {e.request_id: e for e in session.query(UsageEvent).all()}


def record_outcomes(gw: Gateway) -> list[Outcome]:
    """Spy on the core's decisions: the addon must translate exactly these."""
    seen: list[Outcome] = []
    check = gw.runtime.gatekeeper.check

    async def spy(req: CheckInput) -> Outcome:
        seen.append(await check(req))
        return seen[-1]

    gw.runtime.gatekeeper.check = spy  # type: ignore[method-assign]
    return seen


async def stream_through(gw: Gateway, f: http.HTTPFlow, chunks: tuple[bytes, ...], content_type: str) -> bytes:
    """What mitmproxy does with a streamed response: headers, every chunk through the callable, b"" at the end."""
    f.response = upstream_response(b"", content_type)
    gw.addon.responseheaders(f)
    assert callable(f.response.stream)
    return b"".join(f.response.stream(c) for c in (*chunks, b""))  # type: ignore[misc]


# -- options


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("quotagate_database_url", "mysql://db/quotagate", "must be a sqlite:// or postgresql+psycopg:// URL"),
        ("quotagate_redis_url", "http://localhost:6379", "must be a redis://, rediss:// or unix:// URL"),
        ("quotagate_manifest", "/nonexistent/manifest.yaml", "cannot read manifest"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(option: str, value: str, message: str) -> None:
    addon = QuotagateAddon()
    with taddons.context(addon) as ctx, pytest.raises(exceptions.OptionsError, match=re.escape(message)):
        ctx.configure(addon, **{option: value})


def test_an_invalid_manifest_reports_each_problem(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", demo_manifest().replace("rpm_limit: 600", "rpm_limit: lots"))
    addon = QuotagateAddon()
    with taddons.context(addon) as ctx, pytest.raises(exceptions.OptionsError, match="rpm_limit"):
        ctx.configure(addon, quotagate_manifest=bad)


async def test_the_manifest_option_is_applied_on_start_and_on_change(provider_env: None, tmp_path: Path) -> None:
    addon = QuotagateAddon()
    with taddons.context(addon, options=proxy_options()) as ctx:
        ctx.configure(addon, quotagate_manifest=write(tmp_path, "m.yaml", demo_manifest()))
        await addon.running()
        try:
            runtime = addon._runtime
            assert runtime is not None
            assert "demo-key" in runtime.config.snapshot.keys
            changed = demo_manifest(lambda d: d["organizations"][0]["quotas"][1].update(rpm_limit=7))
            ctx.configure(addon, quotagate_manifest=write(tmp_path, "m2.yaml", changed))
            await next(iter(addon._tasks))
            limits = [q.rpm_limit for qs in runtime.config.snapshot.quotas.values() for q in qs if q.rpm_limit]
            assert limits == [7]
            with pytest.raises(exceptions.OptionsError, match="cannot change while mitmproxy runs"):
                ctx.configure(addon, quotagate_database_url=f"sqlite:///{tmp_path / 'other.db'}")
        finally:
            await addon.done()


def test_mitmproxys_eager_connections_are_refused_with_a_clear_message() -> None:
    addon = QuotagateAddon()
    eager = taddons.context(addon, options=proxy_options("eager"))
    with eager as ctx, pytest.raises(exceptions.OptionsError, match=re.escape(LAZY_NEEDED)):
        configure_all(ctx, addon)  # what `mitmdump -s` without --set connection_strategy=lazy does
    with taddons.context(addon, options=proxy_options()) as ctx:
        configure_all(ctx, addon)
        with pytest.raises(exceptions.OptionsError, match="connection_strategy=lazy"):
            ctx.configure(addon, connection_strategy="eager")  # e.g. in mitmweb's options, while running
        assert ctx.options.connection_strategy == "lazy"  # mitmproxy rolled the change back


async def test_the_gateway_does_not_start_under_eager_connections(
    provider_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    """mitmweb keeps running after a configure error: the addon must then refuse every request itself."""
    addon = QuotagateAddon()
    with taddons.context(addon, options=proxy_options("eager")):
        await addon.running()
        assert addon._runtime is None
        assert LAZY_NEEDED in caplog.text
        f = gateway_flow("demo-key.secretsecretsecretsecret")
        await addon.request(f)
        assert f.response is not None and f.response.status_code == 503


# -- request side


async def test_allow_swaps_the_credential_rewrites_the_body_and_routes_like_envoy(gw: Gateway) -> None:
    f = gateway_flow(
        gw.credential,
        {**CHAT, "stream": True},
        x_api_key=gw.credential,
        x_quotagate_rewrite="1",
        x_quotagate_upstream="x",
    )
    await gw.send(f)
    req = f.request
    assert f.response is None  # goes upstream
    assert req.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    for gone in ("x-api-key", "x-quotagate-upstream", "x-quotagate-rewrite", "accept-encoding"):
        assert gone not in req.headers
    assert gw.credential not in str(req.headers)
    assert len(req.headers["x-request-id"]) >= 8
    body = json.loads(req.raw_content or b"")
    assert body["stream_options"] == {"include_usage": True}
    assert req.headers["content-length"] == str(len(req.raw_content or b""))
    assert (req.scheme, req.host, req.port, req.host_header) == ("http", "127.0.0.1", 18080, "127.0.0.1")
    assert f.comment.startswith("gpt-4o-mini: allowed, reserved")
    assert f.metadata["quotagate"]["key_id"] == "demo-key"


async def test_a_provider_prefix_is_stripped_from_the_model(gw: Gateway) -> None:
    f = await gw.send(gateway_flow(gw.credential, {**CHAT, "model": "openai/gpt-4o-mini"}))
    assert json.loads(f.request.raw_content or b"")["model"] == "gpt-4o-mini"


async def test_the_core_not_the_listener_picks_the_upstream(provider_env: None) -> None:
    def anthropic_elsewhere(doc: dict[str, Any]) -> None:
        doc["deployment"]["gateway"]["upstreams"][1].update(server="127.0.0.1:18081")

    async for gw in start_gateway(demo_manifest(anthropic_elsewhere)):
        body = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}
        f = await gw.send(gateway_flow(gw.credential, body, path="/v1/messages", header="x-api-key"))
        assert f.response is None
        assert (f.request.host, f.request.port) == ("127.0.0.1", 18081)  # arrived on the openai listener
        assert f.request.headers["x-api-key"] == ANTHROPIC_KEY
        assert f.request.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in f.request.headers


async def test_denials_are_the_cores_refusal_byte_for_byte(gw: Gateway) -> None:
    outcomes = record_outcomes(gw)
    for f in (
        gateway_flow(None),
        gateway_flow("demo-key.wrongwrongwrongwrongwrong"),
        gateway_flow(gw.credential, {**CHAT, "model": "no-such-model"}),
        gateway_flow(gw.credential, b"{not json"),
        gateway_flow(gw.credential, path="/v1/nothing-here"),
    ):
        await gw.send(f)
        denial = outcomes[-1]
        assert isinstance(denial, Deny)
        assert f.response is not None
        assert f.response.status_code == denial.status
        assert f.response.content == denial.body
        for name, value in (*denial.headers, ("x-quotagate-request-id", denial.request_id)):
            assert f.response.headers[name] == value
        assert f.response.headers["content-length"] == str(len(denial.body))
        assert f.marked == DENIED_MARK
        assert f.comment == f"denied {denial.status} {denial.reason}"
    assert [o.status for o in outcomes if isinstance(o, Deny)] == [401, 401, 404, 400, 404]
    assert gw.addon.summary.denials.total() == 5


async def test_rate_limited_requests_get_429_with_retry_after(provider_env: None) -> None:
    one_rpm = demo_manifest(lambda d: d["organizations"][0]["quotas"][1].update(rpm_limit=1))
    async for gw in start_gateway(one_rpm):
        assert (await gw.send(gateway_flow(gw.credential))).response is None
        f = await gw.send(gateway_flow(gw.credential))
        assert f.response is not None and f.response.status_code == 429
        assert int(f.response.headers["retry-after"]) >= 1
        assert f.response.headers["x-quotagate-deny-reason"] == "rate_limit_rpm"
        assert f.comment == "denied 429 rate_limit_rpm"


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")],
)
async def test_an_internal_error_answers_503_and_never_goes_upstream(gw: Gateway, path: str, shape: str) -> None:
    async def broken(req: CheckInput) -> Outcome:
        raise RuntimeError("boom")

    gw.runtime.gatekeeper.check = broken  # type: ignore[method-assign]
    f = await gw.send(gateway_flow(gw.credential, path=path))
    assert f.response is not None and f.response.status_code == 503
    body = json.loads(f.response.content or b"")
    if shape == "openai":
        assert body["error"]["code"] == "gateway_error"
    else:
        assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    assert f.marked == DENIED_MARK


async def test_an_error_after_admission_returns_the_reservation(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("addons.quotagate_gateway.apply_allow", broken)
    f = await gw.send(gateway_flow(gw.credential))
    assert f.response is not None and f.response.status_code == 503
    assert not gw.addon._open
    (event,) = events(gw).values()
    assert event.error == "the gateway failed before dispatch"
    assert event.cost_nanos == 0


async def test_an_upstream_without_a_route_is_envoys_404_and_is_metered(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = gw.runtime.config.snapshot
    monkeypatch.setattr(gw.runtime.config, "snapshot", type(snapshot)(**{**snapshot.__dict__, "upstreams": {}}))
    f = await gw.send(gateway_flow(gw.credential, {**CHAT, "stream": True}))
    assert f.response is not None and f.response.status_code == 404
    assert json.loads(f.response.content or b"") == {
        "error": {"code": "direct_response", "message": UNROUTED, "param": None, "type": "api_error"}
    }
    gw.addon.responseheaders(f)  # mitmproxy runs both for a response the request hook set
    assert not callable(f.response.stream)  # our own whole body: never streamed
    await gw.addon.response(f)
    assert f.response.headers["x-ratelimit-limit-requests"] == "600"  # as Envoy adds Check's headers to it
    assert not gw.addon._open
    (event,) = events(gw).values()
    assert (event.status, event.decision, event.cost_nanos) == (404, "allowed", 0)
    assert UNROUTED in (event.error or "")


def _tls_snapshot(gw: Gateway, **upstreams: tuple[str, int, str | None]) -> Snapshot:
    snapshot = gw.runtime.config.snapshot
    views = {
        name: UpstreamView(name=name, host=host, port=port, tls=True, ssl_name=ssl_name, keepalive=None)
        for name, (host, port, ssl_name) in upstreams.items()
    }
    return type(snapshot)(**{**snapshot.__dict__, "upstreams": {**snapshot.upstreams, **views}})


async def test_upstream_tls_names_the_ssl_name_in_sni_and_fails_closed_when_ambiguous(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = _tls_snapshot(gw, a=("10.0.0.1", 443, "api.openai.com"), b=("10.0.0.2", 443, None))
    monkeypatch.setattr(gw.runtime.config, "snapshot", snapshot)
    for address, sni in ((("10.0.0.1", 443), "api.openai.com"), (("10.0.0.2", 443), "10.0.0.2")):
        server = connection.Server(address=address)
        gw.addon.server_connect(server_hooks.ServerConnectionHookData(server, tflow.tclient_conn()))
        assert (server.sni, server.error) == (sni, None)
    plain = connection.Server(address=("127.0.0.1", 18080))  # the demo's plain-HTTP upstream: left alone
    gw.addon.server_connect(server_hooks.ServerConnectionHookData(plain, tflow.tclient_conn()))
    assert plain.sni is None

    two = _tls_snapshot(gw, a=("10.0.0.1", 443, "api.openai.com"), c=("10.0.0.1", 443, "other.example"))
    monkeypatch.setattr(gw.runtime.config, "snapshot", two)
    server = connection.Server(address=("10.0.0.1", 443))
    gw.addon.server_connect(server_hooks.ServerConnectionHookData(server, tflow.tclient_conn()))
    assert server.error is not None and "give them one ssl_name" in server.error


async def test_requests_before_the_runtime_started_get_503(provider_env: None) -> None:
    addon = QuotagateAddon()
    with taddons.context(addon):
        f = gateway_flow("demo-key.secretsecretsecretsecret")
        await addon.request(f)
        assert f.response is not None and f.response.status_code == 503


def test_request_bodies_are_never_streamed() -> None:
    f = gateway_flow(None)
    f.request.stream = True
    QuotagateAddon().requestheaders(f)
    assert f.request.stream is False


async def test_a_flow_another_addon_answered_is_left_alone(gw: Gateway) -> None:
    f = gateway_flow(None)
    f.response = upstream_response(b"local", "text/plain")
    await gw.send(f)
    assert f.response.content == b"local"
    assert not f.marked


# -- response side


async def test_a_stream_passes_unchanged_and_is_metered_with_its_usage(gw: Gateway) -> None:
    f = await gw.send(gateway_flow(gw.credential, {**CHAT, "stream": True}))
    assert await stream_through(gw, f, CHAT_STREAM, "text/event-stream") == b"".join(CHAT_STREAM)
    assert f.response is not None
    assert f.response.headers["x-ratelimit-limit-requests"] == "600"  # admission's headers reach the client
    await gw.addon.response(f)
    meta = f.metadata["quotagate"]
    assert f.response.headers["x-quotagate-request-id"] == meta["request_id"]
    assert (meta["input_tokens"], meta["output_tokens"], meta["cost_source"]) == (9, 2, "reported")
    assert meta["cost"] == "0.00000255 usd"
    assert "599 requests/min" in f.comment and "usd this month" in f.comment
    assert not f.marked
    event = events(gw)[meta["request_id"]]
    assert (event.input_tokens, event.output_tokens, event.cost_nanos) == (9, 2, CHAT_COST_NANOS)
    assert event.front_door == "mitmproxy"


async def test_a_json_response_is_metered_in_the_response_hook(gw: Gateway) -> None:
    f = await gw.send(gateway_flow(gw.credential))
    f.response = upstream_response(CHAT_JSON, "application/json")
    gw.addon.responseheaders(f)
    assert f.response.stream is False  # buffered, so mitmweb shows the body
    await gw.addon.response(f)
    assert f.response.content == CHAT_JSON
    assert events(gw)[f.metadata["quotagate"]["request_id"]].cost_nanos == CHAT_COST_NANOS
    assert "9 in / 2 out tokens" in f.comment


async def test_a_body_mitmproxy_streams_by_size_is_metered_as_it_passes(gw: Gateway) -> None:
    f = await gw.send(gateway_flow(gw.credential))
    f.response = upstream_response(b"", "application/json")
    f.response.stream = True  # what stream_large_bodies does before the responseheaders hook
    gw.addon.responseheaders(f)
    assert callable(f.response.stream)
    assert f.response.stream(CHAT_JSON) == CHAT_JSON
    await gw.addon.response(f)
    assert events(gw)[f.metadata["quotagate"]["request_id"]].cost_nanos == CHAT_COST_NANOS


async def test_a_cut_stream_is_charged_as_estimated_once(gw: Gateway) -> None:
    f = await gw.send(gateway_flow(gw.credential, {**CHAT, "stream": True}))
    await stream_through(gw, f, CHAT_STREAM[:1], "text/event-stream")
    f.error = flow.Error("peer closed connection without sending complete message body")
    await gw.addon.error(f)
    await gw.addon.error(f)  # a second report changes nothing
    event = events(gw)[f.metadata["quotagate"]["request_id"]]
    assert event.usage_source == "estimated"
    assert event.output_tokens > 0 and event.cost_nanos > 0
    assert event.error is not None and "peer closed" in event.error
    assert f.marked == ESTIMATED_MARK
    assert gw.addon.summary.rows[("demo-key", "gpt-4o-mini")].estimated == 1


def test_the_stream_callable_never_raises() -> None:
    class Exploding:
        def chunk(self, data: bytes) -> None:
            raise ValueError("parser bug")

    stream = passthrough(Exploding())
    chunk = b"data: {}\n\n"
    assert stream(chunk) is chunk
    assert stream(b"") == b""


async def test_open_exchanges_are_settled_on_shutdown_and_a_summary_is_printed(
    provider_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    gateways: AsyncIterator[Gateway] = start_gateway(demo_manifest())
    gw = await anext(gateways)
    f = await gw.send(gateway_flow(gw.credential, {**CHAT, "stream": True}))
    await stream_through(gw, f, CHAT_STREAM[:1], "text/event-stream")
    await gw.send(gateway_flow(None))
    with pytest.raises(StopAsyncIteration):
        await anext(gateways)  # runs done()
    assert not gw.addon._open
    summary = capsys.readouterr().err  # stderr: shown whatever mitmproxy's log verbosity
    assert "Quotagate session: 1 request(s) metered, 1 denied" in summary
    assert "demo-key" in summary and "missing_credential x1" in summary


async def test_running_and_done_work_when_mitmproxy_calls_them_synchronously(provider_env: None) -> None:
    """`mitmdump -s` reloads call these hooks without awaiting them: they must not be coroutine functions."""
    addon = QuotagateAddon()
    with taddons.context(addon, options=proxy_options()) as ctx:
        configure_all(ctx, addon)
        ctx.master.addons.invoke_addon_sync(addon, hooks.RunningHook())
        await addon._started()
        ctx.master.addons.invoke_addon_sync(addon, hooks.DoneHook())
        await addon.done()  # the same stop, awaited
        assert addon._runtime is None
