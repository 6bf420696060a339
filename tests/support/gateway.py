"""An in-process gateway runtime over a fresh store, for core tests without Envoy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import yaml

from quotagate.app import open_app
from quotagate.gateway.outcome import CheckInput
from quotagate.manifest.desired import desired_state
from quotagate.manifest.load import load_text
from quotagate.runtime import GatewayRuntime, open_runtime
from quotagate.settings import load_settings
from quotagate.store import keys_repo
from quotagate.store.manifest_apply import apply_plan, plan_manifest

REPO = Path(__file__).resolve().parents[2]

# Seed 003's access-log `log_format` fields, in its order (the access log writes these first).
SEED_LOG_FIELDS = (
    "time",
    "org",
    "project",
    "client",
    "gateway_key_id",
    "provider",
    "model",
    "rate_limit_reason",
    "request_remaining",
    "token_remaining",
    "input_cost",
    "output_cost",
    "total_cost",
    "cost_status",
    "status",
    "request_time",
)


def manifest_text(name: str = "local-demo.yaml", *, upstream: str | None = None) -> str:
    text = (REPO / "examples" / name).read_text()
    if upstream is not None:
        text = text.replace("127.0.0.1:18080", upstream)
    return text


def edit_manifest(text: str, edit) -> str:  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(text)
    edit(doc)
    return yaml.safe_dump(doc, sort_keys=False)


def apply_manifest(text: str) -> None:
    app = open_app()
    desired = desired_state(load_text(text))
    with app.db.transaction() as session:
        apply_plan(session, desired, plan_manifest(session, desired), actor="test")
    app.close()


def issue_key(key_id: str) -> str:
    app = open_app()
    with app.db.transaction() as session:
        cred = keys_repo.issue_key(session, app.hasher, key_id, actor="test")
    app.close()
    return str(cred)


@asynccontextmanager
async def running_runtime(**overrides: object) -> AsyncIterator[GatewayRuntime]:
    rt = open_runtime(load_settings(**overrides))
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()


def chat_request(
    credential: str | None,
    body: bytes | str | dict | None = None,
    *,  # type: ignore[type-arg]
    path: str = "/v1/chat/completions",
    header: str = "authorization",
    **extra: str,
) -> CheckInput:
    import orjson

    if body is None:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]}
    raw = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else orjson.dumps(body)
    headers = {"content-type": "application/json", **extra}
    if credential is not None:
        headers[header] = f"Bearer {credential}" if header == "authorization" else credential
    return CheckInput(method="POST", path=path, headers=headers, body=raw, client_ip="127.0.0.1", front_door="test")
