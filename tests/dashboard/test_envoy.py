"""The dashboard through the real Envoy: the page, its assets and the API it calls are routed to the HTTP
side; a cap changed on a sub-account's page holds for the next request an OpenAI SDK sends through Envoy."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from quotagate.app import open_app
from quotagate.fake_provider.testing import running_fake_provider
from quotagate.settings import load_settings
from quotagate.store.credentials_repo import set_provider_key
from quotagate.store.snapshot_loader import load_snapshot
from tests.dashboard.browser import launched, new_page, prerequisites, shot, sign_in
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

pytestmark = [pytest.mark.envoy, pytest.mark.browser]
PROMPT = [{"role": "user", "content": "Summarise this report."}]


@dataclass
class Stack:
    served: Served
    envoy: EnvoyProcess
    admin_token: str  # organization `demo`


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    prerequisites()
    with running_fake_provider() as fake:
        apply(stack_manifest(fake.base_url.removeprefix("http://")))
        app = open_app()
        with app.db.transaction(immediate=True) as session:
            for provider, key in PROVIDER_KEYS.items():
                set_provider_key(session, app.secret_box(), provider, key, actor="test")
        with app.db.read() as session:
            snapshot = load_snapshot(session)
        app.close()
        token = admin_token("demo")
        with serving_in_thread(load_settings(config_refresh_ms=50), grpc=True) as served:
            listen, admin_port = free_port(), free_port()
            options = RenderOptions(
                listen=("127.0.0.1", listen),
                grpc_endpoints=(served.grpc_address,),
                http_side=("127.0.0.1", int(served.url.rsplit(":", 1)[1])),
                admin_port=admin_port,
            )
            config = render_envoy_config(snapshot, options)
            with running_envoy(config, workdir=tmp_path / "envoy", listen_port=listen, admin_port=admin_port) as envoy:
                yield Stack(served, envoy, token)


@pytest.fixture
def page() -> Iterator[Any]:
    with launched() as browser, new_page(browser) as page:
        yield page


def test_a_cap_set_on_the_page_holds_for_the_next_request_through_envoy(stack: Stack, page: Any) -> None:
    url = stack.envoy.url
    created = httpx.post(
        url + "/v1/sub-accounts",
        json={"name": "acme-corp", "spend_cap_cents": 1, "default_tag": "acme"},
        headers=bearer(stack.admin_token),
    )
    assert created.status_code == 201, created.text
    sa = created.json()
    client = openai.OpenAI(base_url=url + "/v1", api_key=sa["key"], max_retries=0)
    # 20,000 output tokens of gpt-4o-mini cost 1.2 cents at worst: over the 1-cent cap, refused before dispatch.
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=20_000)

    sign_in(page, url, stack.admin_token)  # page, assets and API calls all through Envoy's listener
    page.wait_for_selector("h1:has-text('Demo Org')")
    page.click("nav a:has-text('Sub-accounts')")
    page.click("a:has-text('acme-corp')")
    page.wait_for_selector("table.requests .badge:has-text('insufficient quota')")
    page.fill("#cap-input", "5")
    page.click("button:has-text('Save cap')")
    page.wait_for_selector(".toast:has-text('enforced from the next request')")

    reply = client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=20_000)
    assert reply.usage is not None and reply.usage.total_tokens > 0
    assert stack.served.runtime is not None
    stack.served.runtime.writer.flush()
    page.wait_for_selector("table.requests .badge:has-text('200')", timeout=8_000)
    page.wait_for_selector(".gauge-caption:has-text('of $5.00')")
    shot(page, "sub-account-through-envoy")
