"""Shared pieces of the governance tests: an in-process gateway over a manifest edited per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import select

from quotagate.runtime import GatewayRuntime
from quotagate.store.tables import UsageEvent
from tests.support.gateway import apply_manifest, edit_manifest, issue_key, manifest_text, running_runtime

Edit = Callable[[dict[str, Any]], None]


def project_of(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["organizations"][0]["projects"][0]  # type: ignore[no-any-return]


@pytest.fixture
def provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", "sk-provider-test-123")
    monkeypatch.setenv("QUOTAGATE_DEMO_ANTHROPIC_KEY", "sk-ant-provider")


@pytest.fixture
def gateway(provider_env: None) -> Callable[..., Any]:
    """`async with gateway(edit, **settings) as (rt, credential)`: local-demo.yaml after `edit`, key demo-key."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def start(edit: Edit, **settings: Any) -> AsyncIterator[tuple[GatewayRuntime, str]]:
        apply_manifest(edit_manifest(manifest_text(), edit))
        credential = issue_key("demo-key")
        async with running_runtime(**settings) as rt:
            yield rt, credential

    return start


def usage_rows(rt: GatewayRuntime) -> list[UsageEvent]:
    rt.writer.flush()
    with rt.app.db.read() as session:
        rows = list(session.scalars(select(UsageEvent).order_by(UsageEvent.started_at)))
        session.expunge_all()
    return rows
