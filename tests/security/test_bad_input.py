"""Bad input at Check: each case gets its exact 4xx and changes no counter, and its refusal is stored like any
other (on SQLite and PostgreSQL: a refusal no database accepts would stall the usage writer behind it).
Header tricks go through the real Envoy, over both Check transports: forged x-quotagate-* and x-envoy-* headers
are ignored or stripped, and no CR, LF or NUL a client sends reaches Check or the provider."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from quotagate.apis import Provider
from quotagate.gateway.outcome import Allow, Deny
from quotagate.store.tables import PromptLog, UsageEvent
from tests.security.conftest import bound_client, counter_snapshot, demo_runtime
from tests.support.envoy import PROVIDER_KEYS, GatewayStack, running_stack
from tests.support.gateway import apply_manifest, chat_request, edit_manifest, issue_key, manifest_text, running_runtime

CHAT = "/v1/chat/completions"
MESSAGES = b'"messages":[{"role":"user","content":"hi"}]'
NOT_JSON = "the request body is not valid JSON: "
BETWEEN = "must be between 1 and 10000000"


def _chat(fields: bytes) -> bytes:
    return b'{"model":"gpt-4o-mini",' + fields + b"," + MESSAGES + b"}"


def _max_tokens(raw: bytes) -> bytes:
    return _chat(b'"max_tokens":' + raw)


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    status: int
    reason: str
    message: str  # the start of the message, or (after '...') a part of it
    path: str = CHAT
    truncated: bool = False


CASES = (
    Case(
        "invalid UTF-8 in a string",
        _chat(b'"user":"\xff\xfe"'),
        400,
        "invalid_request",
        NOT_JSON + "...not valid UTF-8",
    ),
    Case("invalid UTF-8 in the model", b'{"model":"gpt\xc3",' + MESSAGES + b"}", 400, "invalid_request", NOT_JSON),
    Case("a lone surrogate escape", _chat(b'"user":"\\ud800"'), 400, "invalid_request", NOT_JSON + "...surrogate"),
    Case("a byte order mark", b"\xef\xbb\xbf" + _chat(b'"n":1'), 400, "invalid_request", NOT_JSON + "...BOM"),
    Case("100k nested arrays", b"[" * 100_000 + b"]" * 100_000, 400, "invalid_request", NOT_JSON + "...depth limit"),
    Case(
        "100k nested arrays as the messages",
        b'{"model":"gpt-4o-mini","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        400,
        "invalid_request",
        NOT_JSON + "...depth limit",
    ),
    Case(
        "5000 nested objects elsewhere",
        _chat(b'"metadata":' + b'{"a":' * 5000 + b"1" + b"}" * 5000),
        400,
        "invalid_request",
        NOT_JSON + "...depth limit",
    ),
    Case("max_tokens 1e400", _max_tokens(b"1e400"), 400, "invalid_request", NOT_JSON + "...infinity"),
    Case("temperature 1e400", _chat(b'"temperature":1e400'), 400, "invalid_request", NOT_JSON + "...infinity"),
    Case("max_tokens NaN", _max_tokens(b"NaN"), 400, "invalid_request", NOT_JSON),
    Case(
        "max_tokens 2**70", _max_tokens(str(2**70).encode()), 400, "invalid_request", "'max_tokens' must be an integer"
    ),
    Case(
        "max_tokens 2**64", _max_tokens(str(2**64).encode()), 400, "invalid_request", "'max_tokens' must be an integer"
    ),
    Case("max_tokens 2**63", _max_tokens(str(2**63).encode()), 400, "invalid_request", "'max_tokens' " + BETWEEN),
    Case("max_tokens -2**63", _max_tokens(str(-(2**63)).encode()), 400, "invalid_request", "'max_tokens' " + BETWEEN),
    Case("max_tokens true", _max_tokens(b"true"), 400, "invalid_request", "'max_tokens' must be an integer"),
    Case("max_tokens 1.5", _max_tokens(b"1.5"), 400, "invalid_request", "'max_tokens' must be an integer"),
    Case("max_tokens 1e5", _max_tokens(b"1e5"), 400, "invalid_request", "'max_tokens' must be an integer"),
    Case('max_tokens "10"', _max_tokens(b'"10"'), 400, "invalid_request", "'max_tokens' must be an integer"),
    Case("max_tokens -1", _max_tokens(b"-1"), 400, "invalid_request", "'max_tokens' " + BETWEEN),
    Case("max_tokens 0", _max_tokens(b"0"), 400, "invalid_request", "'max_tokens' " + BETWEEN),
    Case("max_tokens 10M + 1", _max_tokens(b"10000001"), 400, "invalid_request", "'max_tokens' " + BETWEEN),
    Case(
        "a repeated key: the last wins",
        _chat(b'"max_tokens":10,"max_tokens":-1'),
        400,
        "invalid_request",
        "'max_tokens' " + BETWEEN,
    ),
    Case(
        "max_completion_tokens -5",
        _chat(b'"max_completion_tokens":-5'),
        400,
        "invalid_request",
        "'max_completion_tokens' " + BETWEEN,
    ),
    Case(
        "Responses max_output_tokens -1",
        b'{"model":"gpt-4o-mini","input":"hi","max_output_tokens":-1}',
        400,
        "invalid_request",
        "'max_output_tokens' " + BETWEEN,
        path="/v1/responses",
    ),
    Case(
        "Anthropic max_tokens -1",
        b'{"model":"claude-sonnet-4-6","max_tokens":-1,' + MESSAGES + b"}",
        400,
        "invalid_request",
        "'max_tokens' " + BETWEEN,
        path="/v1/messages",
    ),
    Case("content after the document", _chat(b'"n":1') + b" x", 400, "invalid_request", NOT_JSON + "...after"),
    Case("an empty body", b"", 400, "invalid_request", "the request body is empty; send a JSON object"),
    Case("only whitespace", b"   ", 400, "invalid_request", NOT_JSON),
    Case("an array", b"[]", 400, "invalid_request", "the request body must be a JSON object"),
    Case("null", b"null", 400, "invalid_request", "the request body must be a JSON object"),
    Case("no model", b"{" + MESSAGES + b"}", 400, "missing_model", "missing required parameter: 'model'"),
    Case("model 123", b'{"model":123,' + MESSAGES + b"}", 400, "invalid_model", "'model' must be a non-empty string"),
    Case("a blank model", b'{"model":"  ",' + MESSAGES + b"}", 400, "invalid_model", "'model' must be a non-empty"),
    Case(
        "a 201-character model",
        b'{"model":"' + b"m" * 201 + b'",' + MESSAGES + b"}",
        400,
        "invalid_model",
        "'model' must be at most 200 characters, without control characters",
    ),
    Case("NUL in the model", b'{"model":"gpt\\u0000x",' + MESSAGES + b"}", 400, "invalid_model", "'model' must be at"),
    Case("a newline in the model", b'{"model":"gpt\\nx",' + MESSAGES + b"}", 400, "invalid_model", "'model' must be"),
    Case("stream yes", _chat(b'"stream":"yes"'), 400, "invalid_request", "'stream' must be a boolean"),
    Case(
        "stream_options a list",
        _chat(b'"stream":true,"stream_options":[]'),
        400,
        "invalid_request",
        "'stream_options' must be an object",
    ),
    Case(
        "a streamed embedding",
        b'{"model":"text-embedding-3-small","input":"hi","stream":true}',
        400,
        "invalid_request",
        "embeddings do not stream",
        path="/v1/embeddings",
    ),
    Case("a body over the limit", _chat(b'"pad":"' + b"x" * 9_000_000 + b'"'), 413, "request_too_large", "The request"),
    Case(
        "a body the front door cut",
        _chat(b'"n":1'),
        413,
        "request_too_large",
        "The request body exceeds",
        truncated=True,
    ),
)


def _matches(message: str, expected: str) -> bool:
    start, _, part = expected.partition("...")
    return message.startswith(start) and part in message


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", "sk-provider-openai")
    monkeypatch.setenv("QUOTAGATE_DEMO_ANTHROPIC_KEY", "sk-provider-anthropic")
    monkeypatch.setenv("QUOTAGATE_MASTER_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("QUOTAGATE_LEDGER_CHECKPOINT_INTERVAL_S", "0")


async def test_each_bad_body_gets_its_exact_4xx_changes_no_counter_and_is_stored(
    secrets_env: None, use_database: str
) -> None:
    async with demo_runtime() as (rt, credential):
        assert isinstance(await rt.gatekeeper.check(chat_request(credential)), Allow)  # counters seeded
        before = await counter_snapshot(rt)
        wrong: list[str] = []
        refused: list[str] = []
        for case in CASES:
            req = replace(chat_request(credential, case.body, path=case.path), body_truncated=case.truncated)
            outcome = await rt.gatekeeper.check(req)
            if not isinstance(outcome, Deny):
                wrong.append(f"{case.name}: admitted")
                continue
            body = orjson.loads(outcome.body)
            message = body["error"]["message"]
            got = (outcome.status, outcome.reason)
            if got != (case.status, case.reason) or not _matches(message, case.message):
                wrong.append(f"{case.name}: {got} {message[:120]!r}")
            if case.path == "/v1/messages" and body.get("type") != "error":
                wrong.append(f"{case.name}: not in Anthropic's error shape: {body}")
            refused.append(outcome.request_id)
        assert wrong == []
        assert await counter_snapshot(rt) == before

        # Still bounded, not refused: 1,000 levels of nesting in the content (within orjson's depth limit).
        deep = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":' + b"[" * 1000 + b"]" * 1000 + b"}]}"
        assert isinstance(await rt.gatekeeper.check(chat_request(credential, deep)), Allow)
        assert await counter_snapshot(rt) != before  # the snapshot does see an admitted request

        # Every refusal reached the database: none of them stalled the writer.
        rt.writer.flush()
        with rt.app.db.read() as session:
            stored = {e.request_id: e for e in session.query(UsageEvent).filter(UsageEvent.request_id.in_(refused))}
        assert len(stored) == len(CASES)
        assert {e.decision for e in stored.values()} == {"denied"}


async def test_control_characters_in_client_headers_never_reach_the_headers_check_sets(secrets_env: None) -> None:
    """A front door hands Check whatever header values it parsed; what Check sets upstream must stay clean."""
    async with demo_runtime() as (rt, credential):
        cases = [(CHAT, "gpt-4o-mini", tail) for tail in ("\r\nx-evil: 1", "\n", "\0")]
        cases += [("/v1/messages", "claude-sonnet-4-6", tail) for tail in ("\r\nx-evil: 1", "\n", "\0")]
        for path, model, tail in cases:
            body = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
            hostile = {
                "x-request-id": "abc" + tail,
                "anthropic-version": "2023-06-01" + tail,
                "x-quotagate-upstream": "anthropic_local" + tail,
            }
            outcome = await rt.gatekeeper.check(chat_request(credential, body, path=path, **hostile))
            assert isinstance(outcome, Allow), outcome
            for name, value in (*outcome.set_headers, *outcome.response_headers):
                assert not any(ch in value for ch in "\r\n\0"), (name, value)
            assert dict(outcome.set_headers)["x-quotagate-upstream"] in ("openai_local", "anthropic_local")


def _logging_prompts(doc: dict[str, Any]) -> None:
    org = doc["organizations"][0]
    org["projects"][0]["prompt_logging"] = {"mode": "redacted", "retention_days": 1}
    org["projects"].append(
        {
            "project_id": "proj-full",
            "project_slug": "full",
            "project_name": "Full prompt logging",
            "prompt_logging": {"mode": "full", "retention_days": 1},
            "clients": [{"client_id": "client-full", "client_name": "full", "api_keys": [{"key_id": "full-key"}]}],
        }
    )


async def test_a_nul_in_a_logged_response_does_not_stall_prompt_logging(secrets_env: None, use_database: str) -> None:
    """A model may generate U+0000; PostgreSQL text cannot hold it. The capture is stored (NUL replaced) and
    so is every capture behind it."""
    apply_manifest(edit_manifest(manifest_text(), _logging_prompts))
    credentials = [issue_key("demo-key"), issue_key("full-key")]
    async with running_runtime() as rt:
        assert rt.prompt_log is not None
        tickets = []
        for credential in credentials:
            for text in ("before\x00after", "the next one"):
                allowed = await rt.gatekeeper.check(chat_request(credential))
                assert isinstance(allowed, Allow), allowed
                rt.prompt_log.response(allowed.ticket, text)
                tickets.append(allowed.ticket.request_id)
        rt.prompt_log.drain_once()
        with rt.app.db.read() as session:
            rows = {
                r.request_id: r for r in session.scalars(select(PromptLog).where(PromptLog.request_id.in_(tickets)))
            }
    assert len(rows) == 4
    assert {r.response_text for r in rows.values()} == {"before\ufffdafter", "the next one"}
    assert {r.mode for r in rows.values()} == {"redacted", "full"}


# -- header tricks through the real Envoy


def _allowlisted(doc: dict[str, Any]) -> None:
    project = doc["organizations"][0]["projects"][0]
    project["clients"].append(
        {
            "client_id": "client-office",
            "client_name": "Office only",
            "api_keys": [{"key_id": "office-key", "ip_allowlist": ["10.0.0.0/8"]}],
        }
    )


@pytest.fixture(scope="module", params=["grpc-check", "http-check"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayStack, str]]:
    """The stack and the credential of `office-key` (allowed from 10.0.0.0/8 only)."""
    with running_stack(
        tmp_path_factory.mktemp("bad-headers"), edit=_allowlisted, check_over_http=request.param == "http-check"
    ) as stack:
        yield stack, stack.issue_key("office-key")


def _post(gw: GatewayStack, credential: str, **headers: str) -> httpx.Response:
    with bound_client("127.0.0.1") as client:
        return client.post(
            gw.openai_base_url + "/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {credential}", **headers},
        )


@pytest.mark.envoy
async def test_forged_gateway_headers_do_not_move_the_client_address(gw: tuple[GatewayStack, str]) -> None:
    stack, office = gw
    before = await _counters_of(stack)
    for forged in (
        {"x-quotagate-client-ip": "10.1.2.3"},
        {"x-forwarded-for": "10.1.2.3", "x-real-ip": "10.1.2.3", "forwarded": "for=10.1.2.3"},
        {"x-envoy-external-address": "10.1.2.3", "x-envoy-internal": "true"},
    ):
        r = _post(stack, office, **forged)
        assert (r.status_code, r.headers["x-quotagate-deny-reason"]) == (403, "ip_not_allowed"), forged
        assert r.json()["error"]["message"] == "Requests from 127.0.0.1 are not allowed for this key."
    assert await _counters_of(stack) == before


async def _counters_of(stack: GatewayStack) -> Any:
    return stack.server.call(counter_snapshot(stack.runtime))


@pytest.mark.envoy
def test_forged_routing_and_envoy_headers_are_ignored_or_stripped(gw: tuple[GatewayStack, str]) -> None:
    stack, _ = gw
    forged = {
        "x-quotagate-upstream": "anthropic_local",
        "x-quotagate-rewrite": "1",
        "x-quotagate-request-id": "forged-id-0000",
        "x-quotagate-deny-reason": "forged",
        "x-envoy-upstream-rq-timeout-ms": "1",
        "x-envoy-upstream-rq-per-try-timeout-ms": "1",
        "x-envoy-expected-rq-timeout-ms": "1",
        "x-envoy-retry-on": "5xx",
        "x-envoy-max-retries": "7",
        "x-envoy-original-path": "/v1/messages",
        "x-envoy-auth-partial-body": "true",
        "x-envoy-auth-headers-to-remove": "authorization",
    }
    stack.fake.clear_requests()
    r = _post(stack, stack.credential, **forged)
    assert r.status_code == 200, r.text
    assert r.headers["x-quotagate-request-id"] != "forged-id-0000"
    assert "x-quotagate-deny-reason" not in r.headers
    [upstream] = stack.fake.requests()
    assert upstream["path"] == CHAT  # not sent to the Anthropic upstream
    seen = upstream["headers"]
    assert seen["authorization"] == f"Bearer {PROVIDER_KEYS[Provider.OPENAI]}"  # the gateway credential swapped out
    assert "content-length" in seen and "x-quotagate-rewrite" not in seen  # no rewrite forced
    assert "x-quotagate-upstream" not in seen
    for name in ("x-envoy-upstream-rq-timeout-ms", "x-envoy-upstream-rq-per-try-timeout-ms", "x-envoy-retry-on"):
        assert name not in seen, name  # Envoy strips them from an external client
    assert seen["x-envoy-expected-rq-timeout-ms"] != "1" and "x-envoy-original-path" not in seen
    assert stack.usage_event(r.headers["x-quotagate-request-id"]).decision == "allowed"


def _provider_key(stack: GatewayStack) -> str:
    from quotagate.apis import Provider
    from tests.support.envoy import PROVIDER_KEYS

    return PROVIDER_KEYS[Provider.OPENAI]


def _raw_request(stack: GatewayStack, header_line: bytes) -> bytes:
    """One request with a header line written byte for byte (clients refuse to send these)."""
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n"
        + b"authorization: Bearer "
        + stack.credential.encode()
        + b"\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: close\r\n"
        + header_line
        + b"\r\n"
    )
    with socket.create_connection(("127.0.0.1", stack.envoy.listen_port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.envoy
@pytest.mark.parametrize(
    ("line", "status", "upstream_sees"),
    [
        (b"x-probe: a\rb\r\n", 200, {"x-probe": "ab"}),  # a bare CR is dropped
        (b"x-probe: a\r\n b\r\n", 200, {"x-probe": "a b"}),  # a folded line is unfolded
        (b"x-probe: a\nx-evil: 1\r\n", 200, {"x-probe": "a", "x-evil": "1"}),  # a bare LF ends the line
        (b"x-probe: a\x00b\r\n", 400, None),  # NUL: refused by Envoy before Check
        (b"x-probe : a\r\n", 400, None),  # whitespace before the colon
    ],
)
def test_control_characters_in_headers_never_reach_check_or_the_provider(
    gw: tuple[GatewayStack, str], line: bytes, status: int, upstream_sees: dict[str, str] | None
) -> None:
    stack, _ = gw
    stack.fake.clear_requests()
    answer = _raw_request(stack, line)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    received = stack.fake.requests()
    if upstream_sees is None:
        assert received == []
        return
    [upstream] = received
    for name, value in upstream_sees.items():
        assert upstream["headers"][name] == value
    for value in upstream["headers"].values():
        assert not any(ch in value for ch in "\r\n\0")
