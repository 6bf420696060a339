"""Metering real recorded responses: exact cost per token class, settlement, estimates for cut streams."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from quotagate.apis import Api, Provider
from quotagate.gateway.config import ConfigCache
from quotagate.gateway.ticket import Ticket
from quotagate.limits.model import Settlement
from quotagate.metering.meter import Meter, MeterServices
from quotagate.metering.record import UsageRecord
from quotagate.money import NANOS_PER_UNIT
from quotagate.snapshot import Price, Snapshot
from quotagate.usage.model import UsageSource

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "providers"
D = Decimal


def price(
    provider: Provider, model: str, i: str, o: str, cr: str | None = None, cw: str | None = None, mult: str = "1"
) -> Price:
    return Price(provider, model, "usd", D(i), D(o), D(cr) if cr else None, D(cw) if cw else None, D(mult), "test-v1")


PRICES = {
    (Provider.OPENAI, "gpt-4o"): price(Provider.OPENAI, "gpt-4o", "2.50", "10.00", "1.25"),
    (Provider.OPENAI, "gpt-5-nano"): price(Provider.OPENAI, "gpt-5-nano", "0.05", "0.40", "0.005"),
    (Provider.OPENAI, "gpt-5"): price(Provider.OPENAI, "gpt-5", "1.25", "10.00", "0.125"),
    (Provider.ANTHROPIC, "claude-sonnet-4-0"): price(
        Provider.ANTHROPIC, "claude-sonnet-4-0", "3", "15", "0.30", "3.75", "1.5"
    ),
}


class FakeCounters:
    def __init__(self) -> None:
        self.settled: list[Settlement] = []

    async def settle(self, s: Settlement) -> bool:
        self.settled.append(s)
        return True


class ListSink:
    def __init__(self) -> None:
        self.events: list[UsageRecord] = []

    def record(self, event: UsageRecord) -> None:
        self.events.append(event)


def services() -> tuple[MeterServices, FakeCounters, ListSink]:
    snap = Snapshot(version=1, prices=PRICES)
    counters, sink = FakeCounters(), ListSink()
    return MeterServices(config=ConfigCache(lambda: snap, lambda: 1), counters=counters, sink=sink), counters, sink  # type: ignore[arg-type]


def ticket(provider: Provider, api: Api, model: str, stream: bool, prompt_estimate: int = 10) -> Ticket:
    return Ticket(
        request_id="req-1",
        started_at=time.time(),
        org_id="o",
        project_id="p",
        client_id="c",
        key_id="k",
        provider=provider,
        api=api,
        model=model,
        model_requested=model,
        stream=stream,
        reservation_id="req-1",
        reserved_tokens=100_000,
        reserved_nanos=10**9,
        prompt_estimate=prompt_estimate,
    )


def body(case: str) -> tuple[bytes, str]:
    d = FIXTURES / case
    if (d / "response.sse").exists():
        return (d / "response.sse").read_bytes(), "text/event-stream; charset=utf-8"
    return (d / "response.json").read_bytes(), "application/json"


CASES = [
    # case, provider, api, model, (input, cached, cache_write, output, reasoning), exact cost in usd
    (
        "openai/chat-cached-tokens-multi-turn-gpt-4o",
        Provider.OPENAI,
        Api.OPENAI_CHAT,
        "gpt-4o",
        (734, 3072, 0, 76, 0),
        (734 * D("2.50") + 3072 * D("1.25") + 76 * D("10.00")) / 10**6,
    ),
    (
        "openai/chat-stream-reasoning-usage-gpt-5-nano",
        Provider.OPENAI,
        Api.OPENAI_CHAT,
        "gpt-5-nano",
        (12, 0, 0, 100, 100),
        (12 * D("0.05") + 100 * D("0.40")) / 10**6,
    ),
    (
        "openai/responses-stream-cached-reasoning-web-search",
        Provider.OPENAI,
        Api.OPENAI_RESPONSES,
        "gpt-5",
        (1143, 8320, 0, 582, 512),
        (1143 * D("1.25") + 8320 * D("0.125") + 582 * D("10.00")) / 10**6,
    ),
    (
        "anthropic/messages-cache-read-system",
        Provider.ANTHROPIC,
        Api.ANTHROPIC_MESSAGES,
        "claude-sonnet-4-0",
        (12, 4167, 0, 350, 0),
        (12 * D(3) + 4167 * D("0.30") + 350 * D(15)) * D("1.5") / 10**6,
    ),
    # message_delta restates input and cache counts after server tools ran: the last figures win.
    (
        "anthropic/messages-stream-web-search-cache-in-message-delta",
        Provider.ANTHROPIC,
        Api.ANTHROPIC_MESSAGES,
        "claude-sonnet-4-0",
        (2081, 28247, 7621, 574, 0),
        (2081 * D(3) + 28247 * D("0.30") + 7621 * D("3.75") + 574 * D(15)) * D("1.5") / 10**6,
    ),
]


@pytest.mark.parametrize(("case", "provider", "api", "model", "tokens", "cost"), CASES, ids=[c[0] for c in CASES])
async def test_recorded_response_is_priced_exactly(
    case: str, provider: Provider, api: Api, model: str, tokens: tuple[int, ...], cost: Decimal
) -> None:
    svc, counters, sink = services()
    raw, content_type = body(case)
    meter = Meter(ticket(provider, api, model, content_type.startswith("text/event-stream")), svc)
    meter.response_headers(200, content_type)
    for i in range(0, len(raw), 97):  # arbitrary chunking, as a network delivers it
        meter.chunk(raw[i : i + 97])
    rec = await meter.finish()
    u = rec.usage
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens, u.reasoning_tokens) == tokens
    assert u.source is UsageSource.REPORTED
    assert rec.cost.input + rec.cost.cached_input + rec.cost.cache_write + rec.cost.output == cost
    expected_nanos = int((cost * NANOS_PER_UNIT).to_integral_value(rounding="ROUND_HALF_UP"))
    assert rec.cost.total_nanos == expected_nanos
    assert rec.cost.rate_card_version == "test-v1"
    assert counters.settled == [Settlement("req-1", "o", sum(tokens[:4]), expected_nanos)]
    assert sink.events == [rec]
    assert await meter.finish() is rec  # idempotent: settled and recorded once
    assert len(counters.settled) == 1 and len(sink.events) == 1


async def test_upstream_error_is_not_charged() -> None:
    svc, counters, _ = services()
    raw, ct = body("openai/error-chat-400-unsupported-parameter")
    meter = Meter(ticket(Provider.OPENAI, Api.OPENAI_CHAT, "gpt-5-nano", False), svc)
    meter.response_headers(400, ct)
    meter.chunk(raw)
    rec = await meter.finish()
    assert rec.status == 400 and rec.cost.total_nanos == 0 and rec.usage.total_tokens == 0
    assert counters.settled[0].cost_nanos == 0 and counters.settled[0].tokens == 0
    assert rec.error


async def test_cut_stream_is_charged_for_what_was_generated() -> None:
    svc, _, _ = services()
    raw, ct = body("anthropic/messages-stream-web-search-cache-in-message-delta")
    cut = raw[: len(raw) // 2]  # message_start seen, message_delta not
    meter = Meter(ticket(Provider.ANTHROPIC, Api.ANTHROPIC_MESSAGES, "claude-sonnet-4-0", True), svc)
    meter.response_headers(200, ct)
    meter.chunk(cut)
    rec = await meter.finish(error="client disconnected")
    assert rec.usage.source is UsageSource.ESTIMATED
    assert rec.usage.input_tokens == 2060  # from message_start
    assert rec.usage.output_tokens > 1  # counted from the text streamed so far
    assert rec.cost.total_nanos > 0
    assert rec.error == "client disconnected"


async def test_openai_stream_without_usage_is_estimated_from_the_prompt_and_text() -> None:
    svc, _, _ = services()
    raw, ct = body("openai/chat-stream-no-usage-gpt-5-nano")
    meter = Meter(ticket(Provider.OPENAI, Api.OPENAI_CHAT, "gpt-5-nano", True, prompt_estimate=42), svc)
    meter.response_headers(200, ct)
    meter.chunk(raw)
    rec = await meter.finish()
    assert rec.usage.source is UsageSource.ESTIMATED
    assert rec.usage.input_tokens == 42 and rec.usage.output_tokens > 0
