"""A provider, or Quotagate itself, misbehaving behind the real Envoy: what the client sees, what is charged,
and that every reservation is given back (a key whose spend cap fits exactly one request's worst case would be
refused the next request if a reservation leaked).

Timeouts are short here (upstream 1.5 s, rewrite 0.5 s, Check 1 s) so that a stalled peer is seen quickly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import openai
import orjson
import pytest

from ext_authz.processor import StreamProcessor
from tests.support.envoy import GatewayStack, running_stack

pytestmark = pytest.mark.envoy
PROMPT = [{"role": "user", "content": "Say something about gateways."}]
TIGHT = "tight-key"
# One request's worst case at max_tokens=1000 on gpt-4o-mini is ~$0.0006 (1000 output tokens at $0.60/1M plus the
# body's byte bound at $0.15/1M): a $0.001 cap admits one in flight, never two.
CAP_USD = "0.001"


def _tight_key(doc: dict[str, Any]) -> None:
    org = doc["organizations"][0]
    org["projects"][0]["clients"][0]["api_keys"].append({"key_id": TIGHT})
    org["quotas"].append(
        {"scope_type": "key", "key_id": TIGHT, "monthly_spend_limit": CAP_USD, "monthly_spend_unit": "usd"}
    )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    render = {
        "upstream_timeout": timedelta(seconds=1.5),
        "rewrite_timeout": timedelta(seconds=0.5),
        "check_timeout": timedelta(seconds=1),
    }
    with running_stack(tmp_path_factory.mktemp("faults"), edit=_tight_key, render=render) as stack:
        yield stack


@pytest.fixture(scope="module")
def tight(gw: GatewayStack) -> str:
    return gw.issue_key(TIGHT)


def _chat(gw: GatewayStack, credential: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        gw.openai_base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": 1000},
        headers={"authorization": f"Bearer {credential}", **(headers or {})},
        timeout=30,
    )


def _still_admitted(gw: GatewayStack, credential: str) -> None:
    """The cap fits one worst case: admitted only if no earlier reservation of the key is still held or charged
    beyond its real cost."""
    response = _chat(gw, credential)
    assert response.status_code == 200, response.text


def test_provider_errors_reach_the_sdk_as_themselves_and_cost_nothing(gw: GatewayStack, tight: str) -> None:
    client = gw.openai(tight)
    for status, error in (
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
        (429, openai.RateLimitError),
    ):
        with pytest.raises(error) as raised:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=PROMPT,
                max_tokens=1000,
                extra_headers={"x-fake-error-status": str(status)},
            )
        assert raised.value.status_code == status
        event = gw.usage_event(raised.value.response.headers["x-quotagate-request-id"])
        assert (event.status, event.decision, event.cost_nanos) == (status, "allowed", 0)
        assert event.input_tokens == event.output_tokens == 0
    _still_admitted(gw, tight)


def test_a_provider_that_never_answers_is_a_504_and_costs_nothing(gw: GatewayStack, tight: str) -> None:
    started = time.monotonic()
    response = _chat(gw, tight, {"x-fake-latency-ms": "4000"})
    assert response.status_code == 504
    assert time.monotonic() - started < 3.5  # Envoy's route timeout, not the provider's delay
    assert response.json()["error"]["type"] == "api_error"  # the provider's shape, from local_reply_config
    event = gw.usage_event(response.headers["x-quotagate-request-id"])
    assert event.status == 504
    assert event.cost_nanos == 0
    _still_admitted(gw, tight)


def test_garbage_from_the_provider_is_passed_on_settled_and_flagged(gw: GatewayStack, tight: str) -> None:
    response = _chat(gw, tight, {"x-fake-garbage": "1"})
    assert response.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)
    event = gw.usage_event(response.headers["x-quotagate-request-id"])
    assert event.status == 200
    assert event.usage_source == "estimated"  # no usage could be read: what passed is estimated, and says so
    assert event.error is not None
    assert event.cost_nanos <= event.reserved_nanos
    _still_admitted(gw, tight)


def test_an_in_stream_provider_error_is_charged_for_what_streamed(gw: GatewayStack, tight: str) -> None:
    raw = gw.openai(tight).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=PROMPT,
        max_tokens=1000,
        stream=True,
        extra_headers={"x-fake-stream-error-after": "4", "x-fake-output-tokens": "30"},
    )
    with pytest.raises(openai.APIError):
        list(raw.parse())
    event = gw.usage_event(raw.headers["x-quotagate-request-id"])
    assert event.error is not None
    assert event.usage_source == "estimated"
    assert 0 < event.output_tokens < 30
    _still_admitted(gw, tight)


def test_a_stalled_rewrite_lets_the_request_through_with_its_own_body(
    gw: GatewayStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rewrite filter fails open (failure_mode_allow): past its timeout the original body goes on; the stream
    then lacks the usage chunk and is charged by estimate."""
    original = StreamProcessor._on_request_body

    def stalled(self: StreamProcessor, request: Any) -> Any:
        time.sleep(1.0)  # holds the event loop: past the 0.5 s rewrite timeout
        return original(self, request)

    monkeypatch.setattr(StreamProcessor, "_on_request_body", stalled)
    gw.fake.clear_requests()
    with httpx.stream(
        "POST",
        gw.openai_base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": PROMPT, "stream": True},  # no include_usage: marked for rewrite
        headers={"authorization": f"Bearer {gw.credential}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-quotagate-request-id"]
        body = b"".join(response.iter_bytes())
    assert b"data: [DONE]" in body
    sent = gw.fake.last_request()["body"]
    assert "stream_options" not in sent  # the provider got the client's body, unrewritten
    event = gw.usage_event(request_id)
    assert event.status == 200
    assert event.usage_source == "estimated"
    assert event.output_tokens > 0


def test_a_check_slower_than_its_timeout_is_refused_never_let_through(
    gw: GatewayStack, tight: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counters = gw.runtime.counters
    reserve = counters.reserve

    async def slow(request: Any) -> Any:
        await asyncio.sleep(2.0)  # past Envoy's 1 s Check timeout
        return await reserve(request)

    monkeypatch.setattr(counters, "reserve", slow)
    gw.fake.clear_requests()
    response = _chat(gw, gw.credential)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "ext_authz_error"
    assert gw.fake.requests() == []  # fail closed: nothing reached the provider
    monkeypatch.undo()
    time.sleep(2.5)  # the slow decision completes and its reservation is swept or settled; the key still works
    _still_admitted(gw, tight)
