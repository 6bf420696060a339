"""The admin/portal API through the real server: uvicorn on a free port over a running gateway runtime,
called with httpx, on a fresh store (SQLite, and PostgreSQL where a test asks for `database_url`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from quotagate.app import open_app
from quotagate.gateway.outcome import Allow, Deny, Outcome
from quotagate.http.app import build_http_app, serve_http
from quotagate.manifest.desired import desired_state
from quotagate.manifest.load import load_text
from quotagate.runtime import GatewayRuntime
from quotagate.store.admin_tokens_repo import issue_admin_token
from quotagate.store.manifest_apply import apply_plan, plan_manifest
from tests.support.gateway import chat_request, edit_manifest, manifest_text, running_runtime

OTHER_ORG = {
    "organization_id": "org-other",
    "organization_slug": "other",
    "organization_name": "Other Org",
    "quotas": [{"scope_type": "organization", "rpm_limit": 1000}],
    "projects": [
        {
            "project_id": "proj-other",
            "project_slug": "other-app",
            "project_name": "Other app",
            "clients": [
                {"client_id": "client-other", "client_name": "Other developer", "api_keys": [{"key_id": "other-key"}]}
            ],
        }
    ],
}


def two_org_manifest() -> str:
    """examples/local-demo.yaml (organization `demo`) plus a second organization `other`."""
    return edit_manifest(manifest_text(), lambda doc: doc["organizations"].append(OTHER_ORG))


def apply(text: str) -> None:
    app = open_app()
    try:
        desired = desired_state(load_text(text))
        with app.db.transaction(immediate=True) as session:
            apply_plan(session, desired, plan_manifest(session, desired), actor="test")
    finally:
        app.close()


def admin_token(organization: str | None = None) -> str:
    app = open_app()
    try:
        with app.db.transaction(immediate=True) as session:
            _, credential = issue_admin_token(session, app.hasher, organization=organization, name=None, actor="test")
    finally:
        app.close()
    return str(credential)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@dataclass
class Api:
    runtime: GatewayRuntime
    http: httpx.AsyncClient
    root: str  # a global admin token
    url: str

    def as_admin(self, token: str | None = None) -> dict[str, str]:
        return bearer(token or self.root)

    async def get(self, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        return await self.http.get(path, headers=self.as_admin(token), **kw)

    async def post(self, path: str, body: Any = None, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = {**self.as_admin(token), **kw.pop("headers", {})}
        return await self.http.post(path, json=body, headers=headers, **kw)

    async def patch(self, path: str, body: Any, token: str | None = None) -> httpx.Response:
        return await self.http.patch(path, json=body, headers=self.as_admin(token))

    async def put(self, path: str, body: Any, token: str | None = None) -> httpx.Response:
        return await self.http.put(path, json=body, headers=self.as_admin(token))

    async def delete(self, path: str, token: str | None = None) -> httpx.Response:
        return await self.http.delete(path, headers=self.as_admin(token))


@contextlib.asynccontextmanager
async def serving(runtime: GatewayRuntime) -> AsyncIterator[str]:
    """The API of `runtime` on a free port of this event loop (where the runtime lives), until the block ends."""
    port = free_port()
    task = asyncio.create_task(serve_http(build_http_app(runtime), "127.0.0.1", port))
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url) as probe:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await probe.get("/healthz")).status_code == 200:
                    break
            assert not task.done(), task
            assert time.monotonic() < deadline, "the API did not start"
            await asyncio.sleep(0.02)
    try:
        yield url
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", "sk-provider-openai")
    monkeypatch.setenv("QUOTAGATE_DEMO_ANTHROPIC_KEY", "sk-provider-anthropic")
    # PostgreSQL needs an explicit key to store provider credentials (SQLite generates one in the home).
    monkeypatch.setenv("QUOTAGATE_MASTER_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())


async def _api() -> AsyncIterator[Api]:
    apply(two_org_manifest())
    root = admin_token()
    async with running_runtime() as rt, serving(rt) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield Api(rt, http, root, url)


@pytest.fixture
async def api(provider_env: None) -> AsyncIterator[Api]:
    """The API over the embedded default (SQLite in the test's home, in-process counters)."""
    async for value in _api():
        yield value


@pytest.fixture
async def api_db(provider_env: None, use_database: str) -> AsyncIterator[Api]:
    """The API over a fresh SQLite file and, as a second parameter, a fresh PostgreSQL database."""
    async for value in _api():
        yield value


def chat_completion(model: str, prompt_tokens: int, completion_tokens: int) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


async def call_gateway(
    rt: GatewayRuntime,
    credential: str,
    *,
    model: str = "gpt-4o-mini",
    max_tokens: int = 100,
    usage: tuple[int, int] | None = (12, 34),
    headers: dict[str, str] | None = None,
) -> Outcome:
    """One request through the gateway core: Check, then (when allowed and `usage` is given) the provider's
    answer metered and stored, as Envoy's ext_proc would. `headers`: extra request headers (e.g. a signed actor)."""
    body = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Hello"}]}
    outcome = await rt.gatekeeper.check(chat_request(credential, body, **(headers or {})))
    if isinstance(outcome, Allow) and usage is not None:
        meter = rt.meter(outcome.ticket)
        meter.response_headers(200, "application/json")
        meter.chunk(chat_completion(model, *usage))
        await meter.finish()
    return outcome


def stored(rt: GatewayRuntime) -> None:
    """Every metered event written to the database (the writer normally batches in the background)."""
    rt.writer.flush()


def denial(outcome: Outcome) -> dict[str, Any]:
    assert isinstance(outcome, Deny), outcome
    body: dict[str, Any] = orjson.loads(outcome.body)
    return body


async def issue_key_credential(api: Api, key_id: str = "demo-key") -> str:
    r = await api.post(f"/admin/keys/{key_id}/issue")
    assert r.status_code == 200, r.text
    credential: str = r.json()["credential"]
    return credential
