"""/metrics through the core: requests by route/provider/model/status/decision/reason, tokens by class, cost,
settlement deltas both ways, the latency histograms, backend errors by origin, the unwritten-usage queue.

The registry is per process and other tests count into it too, so every figure is a difference between
two readings around the requests of the test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from quotagate.gateway.outcome import Allow, CheckInput, Deny
from quotagate.http.app import build_http_app
from quotagate.metrics import REGISTRY
from quotagate.runtime import GatewayRuntime
from tests.support.gateway import apply_manifest, chat_request, issue_key, manifest_text, running_runtime
from tests.support.throwaway import free_port

FAMILIES = {  # every family /metrics must expose, with its labels
    "quotagate_requests": {"route", "provider", "model", "status", "decision", "reason", "front_door"},
    "quotagate_tokens": {"provider", "model", "class"},
    "quotagate_cost_nanos": {"provider", "model", "unit"},
    "quotagate_settle_delta": {"resource", "direction"},
    "quotagate_settle_delta_ratio": {"resource"},
    "quotagate_decision_seconds": set(),
    "quotagate_ttft_seconds": set(),
    "quotagate_request_seconds": set(),
    "quotagate_backend_errors": {"origin"},
    "quotagate_usage_spool_depth": set(),
}
CHAT_ROUTE = "openai.chat.completions"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class Reading:
    """Sample values at one moment, to subtract from a later reading."""

    values: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    @classmethod
    def now(cls) -> Reading:
        return cls(
            {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in REGISTRY.collect()
                for s in family.samples
            }
        )

    def since(self, before: Reading) -> Callable[..., float]:
        def delta(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return self.values.get(key, 0.0) - before.values.get(key, 0.0)

        return delta


@pytest.fixture
def provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", "sk-provider-openai")
    monkeypatch.setenv("QUOTAGATE_DEMO_ANTHROPIC_KEY", "sk-ant-provider")


@pytest.fixture
async def runtime(provider_env: None) -> AsyncIterator[tuple[GatewayRuntime, str]]:
    apply_manifest(manifest_text())
    credential = issue_key("demo-key")
    async with running_runtime() as rt:
        yield rt, credential


async def allowed(rt: GatewayRuntime, request: CheckInput) -> Allow:
    outcome = await rt.gatekeeper.check(request)
    assert isinstance(outcome, Allow), outcome
    return outcome


async def metrics_text(rt: GatewayRuntime) -> str:
    transport = httpx.ASGITransport(app=build_http_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


def chat_body(prompt_tokens: int, completion_tokens: int, cached: int, reasoning: int) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": reasoning},
            },
        }
    )


def sse(*events: dict[str, object]) -> list[bytes]:
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


async def test_each_family_counts_what_the_core_did(runtime: tuple[GatewayRuntime, str]) -> None:
    rt, credential = runtime
    before = Reading.now()
    decisions_before = sample("quotagate_decision_seconds_count")

    # 1. Allowed JSON whose usage exceeds what was reserved (max_tokens 5): a top-up of tokens and cost.
    big = await allowed(rt, chat_request(credential, {**_chat(), "max_tokens": 5}))
    meter = rt.meter(big.ticket)
    meter.response_headers(200, "application/json")
    meter.chunk(chat_body(prompt_tokens=5000, completion_tokens=4, cached=1000, reasoning=2))
    big_record = await meter.finish()
    assert big_record.usage.total_tokens > big.ticket.reserved_tokens
    assert big_record.cost.total_nanos > big.ticket.reserved_nanos

    # 2. Allowed stream, first byte after 30 ms, usage well under the reservation: a refund.
    small = await allowed(rt, chat_request(credential, {**_chat(), "stream": True}))
    meter = rt.meter(small.ticket)
    meter.response_headers(200, "text/event-stream")
    await asyncio.sleep(0.03)
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}
    for part in sse(
        {**chunk, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}], "usage": None},
        {**chunk, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}},
    ):
        meter.chunk(part)
    small_record = await meter.finish()
    assert small_record.ttft_ms is not None and small_record.ttft_ms >= 30

    # 3. Denials: a bad key, and two made-up model names (one series between them, not one each).
    bad = await rt.gatekeeper.check(chat_request("demo-key.not-the-secret-at-all-000000"))
    assert isinstance(bad, Deny) and bad.reason == "invalid_credential"
    for name in ("made-up-model-1", "made-up-model-2"):
        unknown = await rt.gatekeeper.check(chat_request(credential, {**_chat(), "model": name}))
        assert isinstance(unknown, Deny) and unknown.reason == "model_not_found"

    delta = Reading.now().since(before)
    requests = "quotagate_requests_total"
    assert delta(requests, **_labels("gpt-4o-mini", "200", "allowed", "")) == 2
    assert delta(requests, **_labels("-", "401", "denied", "invalid_credential", provider="-")) == 1
    assert delta(requests, **_labels("unknown", "404", "denied", "model_not_found", provider="-")) == 2
    assert not [labels for _, labels in Reading.now().values if any("made-up" in v for _, v in labels)]

    tokens = "quotagate_tokens_total"
    mini = {"provider": "openai", "model": "gpt-4o-mini"}
    assert delta(tokens, **mini, **{"class": "input"}) == 4000 + 9  # uncached input: each class counted once
    assert delta(tokens, **mini, **{"class": "cached_input"}) == 1000
    assert delta(tokens, **mini, **{"class": "output"}) == 4 + 1
    assert delta(tokens, **mini, **{"class": "reasoning"}) == 2
    assert delta("quotagate_cost_nanos_total", **mini, unit="usd") == (
        big_record.cost.total_nanos + small_record.cost.total_nanos
    )

    top_up_tokens = big_record.usage.total_tokens - big.ticket.reserved_tokens
    refund_tokens = small.ticket.reserved_tokens - small_record.usage.total_tokens
    settle = "quotagate_settle_delta_total"
    assert delta(settle, resource="tokens", direction="top_up") == top_up_tokens
    assert delta(settle, resource="tokens", direction="refund") == refund_tokens
    assert delta(settle, resource="cost_nanos", direction="top_up") == (
        big_record.cost.total_nanos - big.ticket.reserved_nanos
    )
    assert delta(settle, resource="cost_nanos", direction="refund") == (
        small.ticket.reserved_nanos - small_record.cost.total_nanos
    )
    ratio = "quotagate_settle_delta_ratio"
    assert delta(f"{ratio}_count", resource="tokens") == 2
    assert delta(f"{ratio}_bucket", resource="tokens", le="-0.01") == 1  # the top-up: below zero
    assert delta(f"{ratio}_bucket", resource="tokens", le="1.0") == 2

    assert sample("quotagate_decision_seconds_count") - decisions_before == 5
    assert delta("quotagate_ttft_seconds_count") == 2
    assert delta("quotagate_ttft_seconds_sum") >= 0.03
    assert delta("quotagate_request_seconds_count") == 2

    families = {f.name: f for f in text_string_to_metric_families(await metrics_text(rt))}
    for name, labels in FAMILIES.items():
        assert name in families, f"/metrics lacks {name}"
        found = {k for s in families[name].samples for k in s.labels if k != "le"}
        assert found == labels or name == "quotagate_backend_errors", (name, found)  # that one: the next test


async def test_backend_errors_by_origin_and_the_unwritten_queue(
    provider_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_manifest(manifest_text())
    credential = issue_key("demo-key")
    before = Reading.now()
    # Counters: a Redis that does not answer. The route fails closed: 503, counted as a counters error.
    async with running_runtime(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_ms=200) as rt:
        outcome = await rt.gatekeeper.check(chat_request(credential))
        assert isinstance(outcome, Deny) and outcome.reason == "limits_unavailable"
    assert Reading.now().since(before)("quotagate_backend_errors_total", origin="counters") == 1

    async with running_runtime() as rt:
        # The database refuses writes (its table is away): events queue in the spool, each retry is counted.
        with rt.app.db.transaction() as session:
            session.execute(text("ALTER TABLE usage_events RENAME TO usage_events_away"))
        for _ in range(3):
            await rt.gatekeeper.check(chat_request("demo-key.not-the-secret-at-all-000000"))
        await _until(lambda: Reading.now().since(before)("quotagate_backend_errors_total", origin="database") >= 1)
        assert _spool_depth(await metrics_text(rt)) == 3
        with rt.app.db.transaction() as session:
            session.execute(text("ALTER TABLE usage_events_away RENAME TO usage_events"))
        await asyncio.to_thread(rt.writer.flush)
        assert _spool_depth(await metrics_text(rt)) == 0


def _chat() -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]}


def _labels(model: str, status: str, decision: str, reason: str, *, provider: str = "openai") -> dict[str, str]:
    return {
        "route": CHAT_ROUTE,
        "provider": provider,
        "model": model,
        "status": status,
        "decision": decision,
        "reason": reason,
        "front_door": "test",
    }


def _spool_depth(exposition: str) -> float:
    (family,) = (f for f in text_string_to_metric_families(exposition) if f.name == "quotagate_usage_spool_depth")
    return float(family.samples[0].value)


async def _until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
