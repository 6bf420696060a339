"""Seed 004 end to end through the real Envoy: the admin API mints a sub-account, the customer calls
with the official openai SDK, the cap holds before dispatch, a PATCH lifts it, and the portal endpoints
Envoy routes to the HTTP side answer for the same key."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from quotagate.apis import Provider
from quotagate.app import open_app
from quotagate.fake_provider.testing import FakeProvider, running_fake_provider
from quotagate.settings import load_settings
from quotagate.store.credentials_repo import set_provider_key
from quotagate.store.snapshot_loader import load_snapshot
from quotagate.store.tables import UsageEvent
from tests.http.conftest import admin_token, apply, bearer
from tests.http.threaded import Served, serving_in_thread
from tests.support.envoy import (  # after its import of the Envoy config renderer, which silences its warnings
    PROVIDER_KEYS,
    EnvoyProcess,
    RenderOptions,
    free_port,
    render_envoy_config,
    running_envoy,
    stack_manifest,
)

pytestmark = pytest.mark.envoy
PROMPT = [{"role": "user", "content": "Summarise this report."}]


@dataclass
class Stack:
    fake: FakeProvider
    served: Served
    envoy: EnvoyProcess
    admin: httpx.Client  # through Envoy's listener (routed to the HTTP side), with a global admin token

    def sdk(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.envoy.url + "/v1", api_key=key, max_retries=0)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_fake_provider() as fake:
        apply(stack_manifest(fake.base_url.removeprefix("http://")))
        app = open_app()
        with app.db.transaction(immediate=True) as session:
            for provider, key in PROVIDER_KEYS.items():
                set_provider_key(session, app.secret_box(), provider, key, actor="test")
        with app.db.read() as session:
            snapshot = load_snapshot(session)
        app.close()
        token = admin_token()
        with serving_in_thread(load_settings(config_refresh_ms=50), grpc=True) as served:
            listen, admin_port = free_port(), free_port()
            options = RenderOptions(
                listen=("127.0.0.1", listen),
                grpc_endpoints=(served.grpc_address,),
                http_side=("127.0.0.1", int(served.url.rsplit(":", 1)[1])),
                admin_port=admin_port,
            )
            config = render_envoy_config(snapshot, options)
            with (
                running_envoy(config, workdir=tmp_path / "envoy", listen_port=listen, admin_port=admin_port) as envoy,
                httpx.Client(base_url=envoy.url, headers=bearer(token), timeout=30) as admin,
            ):
                yield Stack(fake, served, envoy, admin)


def test_sub_account_through_envoy_with_the_openai_sdk(stack: Stack) -> None:
    created = stack.admin.post(
        "/v1/sub-accounts",
        json={
            "name": "acme-corp",
            "spend_cap_cents": 1,
            "rate_limit_rpm": 300,
            "default_tag": "acme",
            "organization": "demo",
        },
    )
    assert created.status_code == 201, created.text
    sa = created.json()
    client = stack.sdk(sa["key"])

    # 20,000 output tokens of gpt-4o-mini cost 1.2 cents at worst: refused before the provider sees it.
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=20_000)
    assert refused.value.code == "insufficient_quota"
    assert stack.fake.requests() == []

    assert stack.admin.patch(f"/v1/sub-accounts/{sa['id']}", json={"spend_cap_cents": 1000}).status_code == 200
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=20_000)
    assert reply.usage is not None and reply.usage.total_tokens > 0
    [upstream] = stack.fake.requests()
    assert upstream["headers"]["authorization"] == f"Bearer {PROVIDER_KEYS[Provider.OPENAI]}"  # key swapped

    # The portal side, through the same Envoy and the same key.
    models = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in models and "openai/gpt-4o-mini" in models
    runtime = stack.served.runtime
    assert runtime is not None
    runtime.writer.flush()
    balance = httpx.get(stack.envoy.url + "/api/balance", headers={"X-API-Token": sa["key"]}).json()
    app = open_app()
    with app.db.read() as session:
        event = session.query(UsageEvent).filter_by(client_id=sa["id"], decision="allowed").one()
    app.close()
    assert event.tags["tag"] == "acme" and event.output_tokens == reply.usage.completion_tokens
    assert balance["spend_this_period"]["nanos"] == event.cost_nanos > 0

    usage = stack.admin.get(f"/v1/sub-accounts/{sa['id']}/usage", params={"window": "30d"}).json()
    assert usage["summary"]["requests"] == 1 and usage["summary"]["cost_nanos"] == event.cost_nanos
    assert usage["by_model"][0]["model_id"] == "openai/gpt-4o-mini"

    assert stack.admin.delete(f"/v1/sub-accounts/{sa['id']}").status_code == 200
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=10)
