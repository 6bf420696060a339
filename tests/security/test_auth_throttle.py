"""Failed authentications are rate limited per client address (quotagate/identity/throttle.py).

After `auth_failure_limit` failures in a window from one address, its further failures are 429 with
Retry-After (a valid credential still passes); other addresses are unaffected; Redis shares the counts
between processes; the counting happens on the failure path only; a dead backend never admits anyone.
Through the real Envoy (clients on 127.0.0.1 and 127.0.0.2, both Check transports), in-process over both
backends, and on the admin API."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from quotagate.errors import BackendUnavailable
from quotagate.gateway.outcome import Allow, Deny
from quotagate.identity.throttle import FailedAuthThrottle, source_key
from quotagate.metrics import REGISTRY
from quotagate.runtime import GatewayRuntime
from quotagate.settings import load_settings
from quotagate.store.auth_throttle import MemoryAuthThrottle
from quotagate.store.counters_factory import open_auth_throttle
from quotagate.store.tables import UsageEvent
from tests.http.conftest import admin_token, apply, bearer, serving, two_org_manifest
from tests.security.conftest import bound_client, comparable_body, counter_snapshot, demo_runtime
from tests.support.envoy import GatewayStack, running_stack
from tests.support.gateway import chat_request, running_runtime
from tests.support.throwaway import throwaway_redis

T0 = 1_800_000_000.0  # a multiple of 60: the start of a window
LIMIT = 3
PROMPT = [{"role": "user", "content": "Hello"}]


def addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@contextlib.asynccontextmanager
async def throttle_of(settings: dict[str, Any], **overrides: Any) -> AsyncIterator[FailedAuthThrottle]:
    throttle = open_auth_throttle(
        load_settings(**settings, **{"auth_failure_limit": LIMIT, "auth_failure_window_s": 60, **overrides})
    )
    try:
        yield throttle
    finally:
        await throttle.close()


# -- the throttle itself, on both backends


async def test_failures_are_counted_per_address_and_window(backend_settings: dict[str, Any]) -> None:
    async with throttle_of(backend_settings) as throttle:
        first = addr("127.0.0.1")
        for _ in range(LIMIT):
            assert not (await throttle.failed(first, T0 + 5)).throttled
        over = await throttle.failed(first, T0 + 5.5)
        assert over.throttled and over.retry_after_s == 55  # the window ends at T0 + 60
        assert (await throttle.failed(first, T0 + 59.2)).retry_after_s == 1  # never 0
        assert not (await throttle.failed(addr("127.0.0.2"), T0 + 6)).throttled  # another address
        assert not (await throttle.failed(None, T0 + 6)).throttled  # 'unknown' is a source of its own
        assert not (await throttle.failed(first, T0 + 60)).throttled  # the next window starts afresh


async def test_ipv6_counts_per_64_and_mapped_ipv4_is_ipv4(backend_settings: dict[str, Any]) -> None:
    assert source_key(addr("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert source_key(addr("10.0.0.7")) == "10.0.0.7"
    async with throttle_of(backend_settings) as throttle:
        for host in range(LIMIT):  # a host rotating through its /64 is one source
            assert not (await throttle.failed(addr(f"2001:db8:1:2::{host + 1}"), T0)).throttled
        assert (await throttle.failed(addr("2001:db8:1:2:ffff::9"), T0)).throttled
        assert not (await throttle.failed(addr("2001:db8:1:3::1"), T0)).throttled  # the next /64


async def test_limit_zero_turns_it_off(backend_settings: dict[str, Any]) -> None:
    async with throttle_of(backend_settings, auth_failure_limit=0) as throttle:
        for _ in range(50):
            assert not (await throttle.failed(addr("127.0.0.1"), T0)).throttled


@pytest.mark.redis
async def test_redis_shares_the_count_between_processes(redis_settings: dict[str, Any]) -> None:
    async with throttle_of(redis_settings) as one, throttle_of(redis_settings) as other:
        source = addr("192.0.2.10")
        assert not (await one.failed(source, T0)).throttled
        assert not (await other.failed(source, T0)).throttled
        assert not (await one.failed(source, T0)).throttled
        assert (await other.failed(source, T0)).throttled  # the third failure was one's, the fourth other's


async def test_memory_stays_bounded_and_forgets_old_windows_first() -> None:
    throttle = MemoryAuthThrottle(limit=1, window_s=60, max_sources=3)
    await throttle.failed(addr("10.0.0.1"), T0)  # an old window
    for host in (2, 3):
        await throttle.failed(addr(f"10.0.0.{host}"), T0 + 60)
    assert (await throttle.failed(addr("10.0.0.2"), T0 + 60)).throttled
    await throttle.failed(addr("10.0.0.4"), T0 + 60)  # full: the old window's entry goes first
    assert (await throttle.failed(addr("10.0.0.3"), T0 + 60)).throttled  # still counted
    for host in range(5, 10):  # full of this window: the oldest entries go
        await throttle.failed(addr(f"10.0.0.{host}"), T0 + 60)
    assert len(throttle._counts) == 3


async def test_an_unreachable_redis_raises_backend_unavailable() -> None:
    with throwaway_redis() as server:
        url = server.url
    # the port is closed now: a refused connection, within the timeout
    async with throttle_of({"redis_url": url, "redis_prefix": "qgtest-dead", "redis_timeout_ms": 200}) as throttle:
        with pytest.raises(BackendUnavailable):
            await throttle.failed(addr("127.0.0.1"), T0)


# -- at Check, in-process over both backends


def _spy_on_counting(rt: GatewayRuntime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every source the runtime's throttle counts a failure for (the real counting still happens)."""
    calls: list[str] = []
    real: Callable[[str, int], Awaitable[int]] = rt.auth_throttle._count

    async def counting(source: str, window: int) -> int:
        calls.append(source)
        return await real(source, window)

    monkeypatch.setattr(rt.auth_throttle, "_count", counting)
    return calls


def _body(outcome: object) -> dict[str, Any]:
    assert isinstance(outcome, Deny), outcome
    body: dict[str, Any] = orjson.loads(outcome.body)
    return body


async def test_check_throttles_failures_of_one_address_and_never_a_valid_key(
    provider_key: str, backend_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with demo_runtime(**backend_settings, auth_failure_limit=LIMIT) as (rt, credential):
        counted = _spy_on_counting(rt, monkeypatch)
        key_id = credential.split(".", 1)[0]
        unknown, wrong = f"nobody-key.{'A' * 43}", f"{key_id}.{'A' * 43}"

        def at(credential: str | None, ip: str, **kw: Any) -> Any:
            return rt.gatekeeper.check(replace(chat_request(credential, **kw), client_ip=ip))

        # Good requests never reach the throttle.
        for _ in range(5):
            assert isinstance(await at(credential, "127.0.0.1"), Allow)
        assert counted == []
        for bad in (unknown, wrong, "not-even-a-credential"):
            denied = await at(bad, "127.0.0.1")
            assert (denied.status, denied.reason) == (401, "invalid_credential")
        # Missing credentials and refused-but-authenticated keys are not guesses: not counted.
        assert (await at(None, "127.0.0.1")).status == 401
        assert counted == ["127.0.0.1"] * LIMIT

        throttled = [await at(bad, "127.0.0.1") for bad in (unknown, wrong)]
        for denied in throttled:
            assert (denied.status, denied.reason) == (429, "auth_throttled")
            headers = dict(denied.headers)
            assert 1 <= int(headers["retry-after"]) <= 60
            assert headers["x-should-retry"] == "false"
            assert headers["x-quotagate-deny-reason"] == "auth_throttled"
            error = _body(denied)["error"]
            assert (error["type"], error["code"]) == ("rate_limit_exceeded", "auth_throttled")
            assert error["message"].startswith("Too many failed authentication attempts from this address")
        assert _body(throttled[0]) == _body(throttled[1])  # unknown id and wrong secret: the same answer

        anthropic_denied = await at(wrong, "127.0.0.1", path="/v1/messages")
        assert anthropic_denied.status == 429
        assert comparable_body(anthropic_denied.body)["error"]["type"] == "rate_limit_error"

        # The throttle never refuses a valid key, and another address is unaffected.
        assert isinstance(await at(credential, "127.0.0.1"), Allow)
        assert (await at(wrong, "127.0.0.2")).status == 401
        # IPv4-mapped IPv6 is the same address.
        assert (await at(wrong, "::ffff:127.0.0.1")).status == 429

        rt.writer.flush()
        with rt.app.db.read() as session:
            refused = session.query(UsageEvent).filter(UsageEvent.deny_reason == "auth_throttled").all()
        assert len(refused) == 4
        assert {e.tags["client_ip"] for e in refused} == {"127.0.0.1"}
        assert all(e.organization_id is None and e.key_id is None and e.status == 429 for e in refused)


async def test_failed_attempts_change_no_counter(provider_key: str, backend_settings: dict[str, Any]) -> None:
    async with demo_runtime(**backend_settings, auth_failure_limit=LIMIT) as (rt, credential):
        assert isinstance(await rt.gatekeeper.check(chat_request(credential)), Allow)  # seeds the counters
        before = await counter_snapshot(rt)
        for i in range(LIMIT * 3):
            denied = await rt.gatekeeper.check(chat_request(f"demo-key.{'B' * 43}{i}"))
            assert denied.status in (401, 429)
        assert await counter_snapshot(rt) == before
        assert isinstance(await rt.gatekeeper.check(chat_request(credential)), Allow)
        assert await counter_snapshot(rt) != before  # the snapshot does see a counted request


@pytest.mark.redis
async def test_a_dead_redis_never_admits_and_still_refuses_with_401(provider_key: str) -> None:
    with throwaway_redis() as server:
        async with demo_runtime(
            redis_url=server.url, redis_prefix="qgtest-dead", redis_timeout_ms=200, auth_failure_limit=1
        ) as (rt, credential):
            wrong = f"demo-key.{'A' * 43}"
            assert (await rt.gatekeeper.check(chat_request(wrong))).status == 401
            assert (await rt.gatekeeper.check(chat_request(wrong))).status == 429
            errors_before = _throttle_errors()
            server.kill()
            # Throttle unknown: the failed credential is still refused, as a plain 401.
            denied = await rt.gatekeeper.check(chat_request(wrong))
            assert (denied.status, denied.reason) == (401, "invalid_credential")
            assert _throttle_errors() == errors_before + 1
            # A valid key cannot be counted either: refused (503), never admitted.
            refused = await rt.gatekeeper.check(chat_request(credential))
            assert (refused.status, refused.reason) == (503, "limits_unavailable")
            async with serving(rt) as url, httpx.AsyncClient(base_url=url) as http:
                r = await http.get("/admin/me", headers=bearer(f"qga-0000000000000000.{'A' * 43}"))
                assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_admin_token")


def _throttle_errors() -> float:
    return REGISTRY.get_sample_value("quotagate_backend_errors_total", {"origin": "auth_throttle"}) or 0.0


# -- through the real Envoy: two client addresses, both Check transports


@pytest.fixture(scope="module", params=["grpc-check", "http-check"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    with running_stack(
        tmp_path_factory.mktemp("throttle"), check_over_http=request.param == "http-check", auth_failure_limit=LIMIT
    ) as stack:
        yield stack


def _openai(gw: GatewayStack, source: str, key: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.openai_base_url,
        api_key=key,
        max_retries=0,
        http_client=bound_client(source),
        default_headers=headers or None,
    )


@pytest.mark.envoy
def test_through_envoy_one_address_is_throttled_and_the_other_is_not(gw: GatewayStack) -> None:
    key_id = gw.credential.split(".", 1)[0]
    wrong = f"{key_id}.{'W' * 43}"
    gw.fake.clear_requests()

    # 127.0.0.1 fails, naming 127.0.0.2 in every header a client could forge: counted against itself.
    forged = {"x-quotagate-client-ip": "127.0.0.2", "x-forwarded-for": "127.0.0.2", "x-real-ip": "127.0.0.2"}
    liar = _openai(gw, "127.0.0.1", wrong, **forged)
    for _ in range(LIMIT):
        with pytest.raises(openai.AuthenticationError):
            liar.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    with pytest.raises(openai.RateLimitError) as caught:
        liar.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    response = caught.value.response
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["x-quotagate-deny-reason"] == "auth_throttled"
    assert caught.value.code == "auth_throttled"
    # The Anthropic SDK from the same address: its own error shape.
    with pytest.raises(anthropic.RateLimitError) as refused:
        anthropic.Anthropic(
            base_url=gw.envoy.url, api_key=wrong, max_retries=0, http_client=bound_client("127.0.0.1")
        ).messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=PROMPT)
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]

    # 127.0.0.2 was not framed: its own first failures are 401s, then it is throttled too.
    other = _openai(gw, "127.0.0.2", wrong)
    for _ in range(LIMIT):
        with pytest.raises(openai.AuthenticationError):
            other.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    with pytest.raises(openai.RateLimitError):
        other.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    # 127.0.0.3 is still fine.
    with pytest.raises(openai.AuthenticationError):
        _openai(gw, "127.0.0.3", wrong).chat.completions.create(model="gpt-4o-mini", messages=PROMPT)

    # A valid key passes from a throttled address.
    reply = _openai(gw, "127.0.0.1", gw.credential).chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    assert reply.choices[0].message.content
    assert len(gw.fake.requests()) == 1  # no failed attempt reached the provider


# -- the admin API (and the portal's gateway keys)


@contextlib.asynccontextmanager
async def _admin_api(**settings: Any) -> AsyncIterator[tuple[str, str]]:
    apply(two_org_manifest())
    root = admin_token()
    async with running_runtime(auth_failure_limit=LIMIT, **settings) as rt, serving(rt) as url:
        yield url, root


def _client(url: str, source: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, transport=httpx.AsyncHTTPTransport(local_address=source), timeout=30)


async def test_the_admin_api_throttles_failed_tokens_per_address(provider_key: str) -> None:
    async with (
        _admin_api(trusted_proxies="127.0.0.3/32") as (url, root),
        _client(url, "127.0.0.2") as second,
        _client(url, "127.0.0.1") as first,
        _client(url, "127.0.0.3") as proxy,
    ):
        token_id = root.split(".", 1)[0]
        wrongs = (f"{token_id}.{'A' * 43}", f"qga-0123456789abcdef.{'A' * 43}", "garbage")
        for bad in wrongs:
            r = await second.get("/admin/me", headers=bearer(bad))
            assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_admin_token")
        r = await second.get("/admin/me")  # no token at all: not a guess, not counted
        assert (r.status_code, r.json()["error"]["code"]) == (401, "missing_credential")

        r = await second.get("/admin/organizations", headers=bearer(wrongs[0]))
        assert r.status_code == 429
        assert 1 <= int(r.headers["retry-after"]) <= 60 and r.headers["x-should-retry"] == "false"
        assert r.json()["error"]["type"] == "rate_limit_error" and r.json()["error"]["code"] == "auth_throttled"
        unknown = await second.get("/admin/organizations", headers=bearer(wrongs[1]))
        assert (unknown.status_code, unknown.json()) == (429, r.json())
        # The portal's gateway keys count against the same address.
        portal = await second.get("/api/balance", headers=bearer(f"demo-key.{'A' * 43}"))
        assert (portal.status_code, portal.json()["error"]["code"]) == (429, "auth_throttled")

        # A valid token passes from the throttled address; another address is unaffected.
        assert (await second.get("/admin/me", headers=bearer(root))).status_code == 200
        r = await first.get("/admin/me", headers={**bearer(wrongs[0]), "X-Forwarded-For": "127.0.0.9"})
        assert r.status_code == 401  # X-Forwarded-For from an untrusted peer is ignored: counted as 127.0.0.1
        # A trusted proxy's X-Forwarded-For names the client: 127.0.0.2 is throttled, 10.1.1.1 is not.
        r = await proxy.get("/admin/me", headers={**bearer(wrongs[0]), "X-Forwarded-For": "127.0.0.2"})
        assert r.status_code == 429
        r = await proxy.get("/admin/me", headers={**bearer(wrongs[0]), "X-Forwarded-For": "10.1.1.1"})
        assert r.status_code == 401


@pytest.mark.redis
async def test_admin_failures_are_shared_through_redis(provider_key: str, redis_settings: dict[str, Any]) -> None:
    """Two runtimes (processes of one deployment) over one Redis: failures at either count together."""
    async with (
        _admin_api(**redis_settings) as (url_one, _),
        running_runtime(**redis_settings, auth_failure_limit=LIMIT) as rt_two,
        serving(rt_two) as url_two,
        _client(url_one, "127.0.0.4") as one,
        _client(url_two, "127.0.0.4") as two,
    ):
        bad = bearer(f"qga-0123456789abcdef.{'A' * 43}")
        statuses = [(await (one if i % 2 else two).get("/admin/me", headers=bad)).status_code for i in range(4)]
        assert statuses == [401, 401, 401, 429]
