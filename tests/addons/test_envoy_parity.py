"""The same requests through Envoy and through mitmdump + the addon: the same decisions, answers, usage, cost
and ledger entries.

Both stacks are this module's own, fresh, and see the same requests in the same order, so even the figures
that count what came before (x-ratelimit-remaining-*) must match.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from sqlalchemy import select

from addons.quotagate_flows import UNROUTED, unrouted
from quotagate.app import open_app
from quotagate.settings import Settings
from quotagate.store.tables import LedgerEntry, UsageEvent
from tests.addons.mitmdump import AddonStack, edge_case_keys, running_addon_stack
from tests.support.envoy import GatewayStack, running_stack, stack_manifest

pytestmark = pytest.mark.envoy
PROMPT = [{"role": "user", "content": "Say something about gateways."}]
# What a usage event says about a request, apart from its id and timings.
FIGURES = (
    "status",
    "decision",
    "deny_reason",
    "key_id",
    "provider",
    "api",
    "model_requested",
    "model_served",
    "stream",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "usage_source",
    "cost_input",
    "cost_cached_input",
    "cost_cache_write",
    "cost_output",
    "cost_nanos",
    "unit",
    "rate_card_version",
    "reserved_tokens",
    "reserved_nanos",
)

Stack = GatewayStack | AddonStack
MAX_BODY = 65536  # both stacks: a small limit, so the 413 case sends little
PARITY_KEYS = ("rpm-key", "mini-only-key", "suspended-key", "spend-key")
# Figures that depend on the second a request arrives in; the two stacks answer a few milliseconds apart.
_CLOCK_HEADERS = ("retry-after", "x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")


def parity_keys(doc: dict[str, Any]) -> None:
    """Manifest edit: the edge-case keys, plus a suspended key and a key whose spend cap covers no request."""
    edge_case_keys(doc)
    org = doc["organizations"][0]
    edge = next(p for p in org["projects"] if p["project_id"] == "proj-edge")
    for key, extra in {"suspended-key": {"status": "suspended"}, "spend-key": {}}.items():
        client = {"client_id": f"client-{key}", "client_name": key, "api_keys": [{"key_id": key, **extra}]}
        edge["clients"].append(client)
    # A worst case of ~0.01 usd (16384 output tokens of gpt-4o-mini) never fits a 0.001 usd cap.
    org["quotas"].append(
        {"scope_type": "key", "key_id": "spend-key", "monthly_spend_limit": 0.001, "monthly_spend_unit": "usd"}
    )


def _openai(stack: Stack, credential: str | None = None) -> openai.OpenAI:
    return stack.openai(credential)


def _chat(stack: Stack) -> httpx.Headers:
    return _openai(stack).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=PROMPT).headers


def _chat_prefixed_with_cached_tokens(stack: Stack) -> httpx.Headers:
    return (
        _openai(stack)
        .chat.completions.with_raw_response.create(
            model="openai/gpt-4o-mini", messages=PROMPT, extra_headers={"x-fake-cached-tokens": "4"}
        )
        .headers
    )


def _chat_stream(stack: Stack) -> httpx.Headers:
    raw = _openai(stack).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=PROMPT, stream=True)
    list(raw.parse())
    return raw.headers


def _responses_stream(stack: Stack) -> httpx.Headers:
    raw = _openai(stack).responses.with_raw_response.create(
        model="gpt-5.4-mini", input="Say something.", stream=True, extra_headers={"x-fake-reasoning-tokens": "7"}
    )
    list(raw.parse())
    return raw.headers


def _anthropic_stream(stack: Stack) -> httpx.Headers:
    client: anthropic.Anthropic = stack.anthropic()
    with client.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=64,
        messages=PROMPT,
        extra_headers={"x-fake-cached-tokens": "3", "x-fake-cache-write-tokens": "2"},
    ) as stream:
        stream.get_final_message()
        return stream.response.headers


def _cut_stream(stack: Stack) -> httpx.Headers:
    raw = _openai(stack).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=PROMPT, stream=True, extra_headers={"x-fake-cut-after": "5"}
    )
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        list(raw.parse())
    return raw.headers


def _bad_key(stack: Stack) -> httpx.Headers:
    with pytest.raises(openai.AuthenticationError) as caught:
        _openai(stack, "demo-key.not-the-secret-at-all-000000").chat.completions.create(
            model="gpt-4o-mini", messages=PROMPT
        )
    return caught.value.response.headers


EXCHANGES: dict[str, Callable[[Stack], httpx.Headers]] = {
    "chat": _chat,
    "chat, provider prefix, cached tokens": _chat_prefixed_with_cached_tokens,
    "chat stream, usage injected": _chat_stream,
    "responses stream, reasoning": _responses_stream,
    "anthropic stream, cache read and write": _anthropic_stream,
    "cut stream, estimated": _cut_stream,
    "bad key": _bad_key,
}


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayStack, AddonStack]]:
    with (
        running_stack(tmp_path_factory.mktemp("parity-envoy"), edit=parity_keys, max_request_bytes=MAX_BODY) as envoy,
        running_addon_stack(
            tmp_path_factory.mktemp("parity-addon"),
            edit=parity_keys,
            extra_keys=PARITY_KEYS,
            max_request_bytes=str(MAX_BODY),
        ) as addon,
    ):
        envoy.credentials = {key: envoy.issue_key(key) for key in PARITY_KEYS}  # type: ignore[attr-defined]
        yield envoy, addon


def _credential(stack: Stack, key_id: str) -> str:
    if key_id == "demo-key":
        return stack.credential
    found: dict[str, str] = stack.credentials  # type: ignore[union-attr]
    return found[key_id]


def _figures(event: UsageEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in FIGURES}


def _ledger_entry(settings: Settings, request_id: str) -> dict[str, Any]:
    """The ledger entry of a request, without what only says where it sits (seq, time, its own request id)."""
    app = open_app(settings)
    try:
        with app.db.read() as session:
            (entry,) = session.scalars(select(LedgerEntry).where(LedgerEntry.ref == request_id)).all()
    finally:
        app.close()
    content = orjson.loads(entry.body)
    assert (content["kind"], content["amount_nanos"]) == (entry.kind, entry.amount_nanos)
    return {k: v for k, v in content.items() if k not in ("seq", "recorded_at", "ref")}


@pytest.mark.parametrize("name", EXCHANGES)
def test_the_addon_records_what_envoy_records(stacks: tuple[GatewayStack, AddonStack], name: str) -> None:
    envoy, addon = stacks
    envoy_headers, addon_headers = EXCHANGES[name](envoy), EXCHANGES[name](addon)
    envoy_id, addon_id = envoy_headers["x-quotagate-request-id"], addon_headers["x-quotagate-request-id"]
    envoy_event, addon_event = envoy.usage_event(envoy_id), addon.usage_event(addon_id)
    assert _figures(addon_event) == _figures(envoy_event)
    assert (envoy_event.front_door, addon_event.front_door) == ("envoy", "mitmproxy")
    _same_quota_headers(envoy_headers, addon_headers)
    if envoy_event.decision == "allowed":  # a debit on each organization's hash chain, the same one
        assert _ledger_entry(addon.settings, addon_id) == _ledger_entry(envoy.settings, envoy_id)


def _same_quota_headers(envoy: httpx.Headers, addon: httpx.Headers) -> None:
    names = {n for n in (*envoy, *addon) if n.startswith("x-ratelimit-") or n in ("retry-after", "x-should-retry")}
    for name in sorted(names):
        assert name in envoy and name in addon, f"{name}: only one side sends it"
        if name in _CLOCK_HEADERS:
            assert abs(int(envoy[name].rstrip("s")) - int(addon[name].rstrip("s"))) <= 1, name
        else:
            assert addon[name] == envoy[name], name
    assert addon.get("x-quotagate-deny-reason") == envoy.get("x-quotagate-deny-reason")


def _chat_body(model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": PROMPT, **extra}


DENIALS: dict[str, tuple[str | None, dict[str, Any], int, str]] = {
    # name: (key, body, status, deny reason)
    "missing key": (None, _chat_body(), 401, "missing_credential"),
    "model the key may not use": ("mini-only-key", _chat_body("gpt-5.4"), 403, "model_not_allowed"),
    "suspended key": ("suspended-key", _chat_body(), 403, "key_suspended"),
    "unknown model": ("demo-key", _chat_body("no-such-model"), 404, "model_not_found"),
    "body too large": ("demo-key", _chat_body(padding="x" * MAX_BODY), 413, "request_too_large"),
    "monthly spend cap": ("spend-key", _chat_body(), 429, "insufficient_quota"),
    "requests per minute": ("rpm-key", _chat_body(), 429, "rate_limit_rpm"),
}


def _refusal(stack: Stack, key_id: str | None, body: dict[str, Any], status: int) -> httpx.Response:
    """The answer to `body`; for the 1-per-minute key the first refusal (a minute boundary may admit two)."""
    headers = {"authorization": f"Bearer {_credential(stack, key_id)}"} if key_id else {}
    for _ in range(3):
        answer = httpx.post(f"{stack.openai_base_url}/chat/completions", json=body, headers=headers, timeout=30)
        if answer.status_code != 200:
            break
    assert answer.status_code == status, answer.text
    return answer


@pytest.mark.parametrize("name", DENIALS)
def test_a_denial_is_the_same_answer(stacks: tuple[GatewayStack, AddonStack], name: str) -> None:
    key_id, body, status, reason = DENIALS[name]
    envoy, addon = (_refusal(stack, key_id, body, status) for stack in stacks)
    envoy_body, addon_body = orjson.loads(envoy.content), orjson.loads(addon.content)
    if reason == "rate_limit_rpm":  # its message names the seconds left, which may differ by one
        envoy_body, addon_body = (orjson.loads(re.sub(rb"after \d+s", b"after Ns", a.content)) for a in (envoy, addon))
    assert addon_body == envoy_body
    assert addon.headers["x-quotagate-deny-reason"] == envoy.headers["x-quotagate-deny-reason"] == reason
    assert addon.headers["content-type"] == envoy.headers["content-type"]
    _same_quota_headers(envoy.headers, addon.headers)
    for answer in (envoy, addon):  # each request gets its own id, under both names
        assert answer.headers["x-request-id"] == answer.headers["x-quotagate-request-id"]
    envoy_stack, addon_stack = stacks
    envoy_event = envoy_stack.usage_event(envoy.headers["x-quotagate-request-id"])
    addon_event = addon_stack.usage_event(addon.headers["x-quotagate-request-id"])
    assert _figures(addon_event) == _figures(envoy_event)


def test_an_upstream_envoy_has_no_route_to_is_the_addons_404(stacks: tuple[GatewayStack, AddonStack]) -> None:
    """Envoy's routes are rendered from the manifest it started with: a route moved to a new upstream since
    has no Envoy route, and its catch-all answers. The addon routes from the live snapshot, so it answers the
    same only when its snapshot lacks the upstream (tests/addons/test_quotagate_addon.py drives that case)."""
    envoy = stacks[0]

    def embeddings_elsewhere(doc: dict[str, Any]) -> None:
        parity_keys(doc)
        gateway = doc["deployment"]["gateway"]
        gateway["upstreams"].append({**gateway["upstreams"][0], "name": "openai_moved"})
        next(r for r in gateway["routes"] if r["location"] == "/v1/embeddings")["upstream"] = "openai_moved"

    original = stack_manifest_of(envoy)
    envoy.apply(stack_manifest_of(envoy, embeddings_elsewhere))
    try:
        answer = httpx.post(
            f"{envoy.openai_base_url}/embeddings",
            json={"model": "text-embedding-3-small", "input": "hello"},
            headers={"authorization": f"Bearer {envoy.credential}"},
        )
    finally:
        envoy.apply(original)
    ours = unrouted()
    assert (answer.status_code, orjson.loads(answer.content)) == (ours.status_code, orjson.loads(ours.content or b""))
    assert answer.headers["content-type"] == ours.headers["content-type"]
    event = envoy.usage_event(answer.headers["x-quotagate-request-id"])
    assert (event.status, event.decision, event.cost_nanos) == (404, "allowed", 0)
    assert UNROUTED in (event.error or "")


def test_both_ledgers_verify(stacks: tuple[GatewayStack, AddonStack]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTAGATE_")}
    runs = [  # `quotagate audit verify` over each store, side by side
        subprocess.Popen(
            [sys.executable, "-m", "quotagate", "audit", "verify"],
            env={**env, "QUOTAGATE_HOME": str(stack.settings.home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for stack in stacks
    ]
    for run in runs:
        output, _ = run.communicate(timeout=60)
        assert run.returncode == 0, output
        assert re.search(r"^org-demo: OK: [1-9]\d* entries verified", output, re.M), output  # the debits above


def stack_manifest_of(stack: GatewayStack, edit: Callable[[dict[str, Any]], None] = parity_keys) -> str:
    """The manifest the Envoy stack was built from (after `edit`), pointed at its fake provider."""
    return stack_manifest(stack.fake.base_url.removeprefix("http://"), edit=edit)
