"""Shared pieces of the security suite: both throttle backends, clients bound to a source address, a counter
snapshot (bad input must change nothing), and response normalising (request ids differ per request)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest

from quotagate.limits.model import CounterState, LimitCheck
from quotagate.policy import counter_id, credit_id
from quotagate.runtime import GatewayRuntime
from tests.limits.conftest import delete_prefix, redis_available, unique_prefix
from tests.support.gateway import apply_manifest, issue_key, manifest_text, running_runtime
from tests.support.servers import redis_url

PROVIDER_KEY = "sk-provider-openai-for-security-tests"
# Headers that differ between two otherwise identical answers.
_VARYING_HEADERS = {"date", "x-envoy-upstream-service-time"}
_HEX_ID = re.compile(rb"[0-9a-f]{32}")


@pytest.fixture
def provider_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", PROVIDER_KEY)
    monkeypatch.setenv("QUOTAGATE_DEMO_ANTHROPIC_KEY", PROVIDER_KEY + "-anthropic")
    return PROVIDER_KEY


@asynccontextmanager
async def _redis_settings() -> AsyncIterator[dict[str, Any]]:
    url = redis_url()
    await redis_available(url)
    prefix = unique_prefix()
    try:
        yield {"redis_url": url, "redis_prefix": prefix}
    finally:
        await delete_prefix(url, prefix)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend_settings(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """Settings overrides of one backend: in-process (embedded) or Redis (a fresh key prefix)."""
    if request.param == "memory":
        yield {}
        return
    async with _redis_settings() as settings:
        yield settings


@pytest.fixture
async def redis_settings() -> AsyncIterator[dict[str, Any]]:
    """Settings overrides of the shared Redis backend (a fresh key prefix)."""
    async with _redis_settings() as settings:
        yield settings


@asynccontextmanager
async def demo_runtime(**settings: Any) -> AsyncIterator[tuple[GatewayRuntime, str]]:
    """A runtime over examples/local-demo.yaml and the issued credential of `demo-key` (request the
    `provider_key` fixture first, so requests can be admitted)."""
    apply_manifest(manifest_text())
    credential = issue_key("demo-key")
    async with running_runtime(**settings) as rt:
        yield rt, credential


def all_checks(rt: GatewayRuntime) -> dict[str, tuple[LimitCheck, ...]]:
    """organization id -> a check for every quota it has (whatever the model), to read its counters."""
    snapshot = rt.config.snapshot
    found: dict[str, list[LimitCheck]] = {}
    for quotas in snapshot.quotas.values():
        for q in quotas:
            found.setdefault(q.org_id, []).append(
                LimitCheck(
                    counter_id=counter_id(q),
                    enforce=q.enforce,
                    rpm_limit=q.rpm_limit or 1,
                    tpm_limit=q.tpm_limit or 1,
                    spend_limit_nanos=q.monthly_spend_nanos if q.monthly_spend_nanos is not None else 0,
                    prepaid=q.prepaid,
                    credit_id=credit_id(q) if q.prepaid else None,
                )
            )
    return {org: tuple(checks) for org, checks in found.items()}


async def counter_snapshot(rt: GatewayRuntime, now: float | None = None) -> dict[str, list[CounterState]]:
    """Every counter of every organization (requests and tokens this minute, spend this month, credits)."""
    now = time.time() if now is None else now
    month = datetime.fromtimestamp(now, UTC).strftime("%Y-%m")
    return {org: await rt.counters.state(org, checks, now, month) for org, checks in all_checks(rt).items()}


def bound_client(source: str, **kw: Any) -> httpx.Client:
    """An httpx client whose connections leave from `source` (any 127.x.y.z reaches 127.0.0.1 on Linux)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30, **kw)


@pytest.fixture
def from_second_address() -> Iterator[httpx.Client]:
    with bound_client("127.0.0.2") as client:
        yield client


def comparable_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers without those that vary per answer, request ids (32 hex digits) blanked."""
    return {k.lower(): blank_ids(v) for k, v in headers.items() if k.lower() not in _VARYING_HEADERS}


def blank_ids(text: str) -> str:
    return _HEX_ID.sub(b"<request-id>", text.encode()).decode()


def comparable_body(body: bytes) -> Any:
    """The body with request ids (32 hex digits, Quotagate's) blanked."""
    return orjson.loads(_HEX_ID.sub(b"<request-id>", body))
