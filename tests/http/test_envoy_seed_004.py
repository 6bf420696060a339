"""Seed 004 end to end through the real Envoy: the admin API mints a sub-account, the customer calls
with the official openai SDK, the cap holds before dispatch, a PATCH lifts it, and the portal endpoints
Envoy routes to the HTTP side answer for the same key."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    event = stored_event(stack, sa["id"])
    balance = httpx.get(stack.envoy.url + "/api/balance", headers={"X-API-Token": sa["key"]}).json()
    assert event.tags["tag"] == "acme" and event.output_tokens == reply.usage.completion_tokens
    assert balance["spend_this_period"]["nanos"] == event.cost_nanos > 0

    usage = stack.admin.get(f"/v1/sub-accounts/{sa['id']}/usage", params={"window": "30d"}).json()
    assert usage["summary"]["requests"] == 1 and usage["summary"]["cost_nanos"] == event.cost_nanos
    assert usage["by_model"][0]["model_id"] == "openai/gpt-4o-mini"

    assert stack.admin.delete(f"/v1/sub-accounts/{sa['id']}").status_code == 200
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=10)


# The seed's three curl calls, verbatim (test_the_seed_calls_are_verbatim checks them against the seed).
SEED_004 = Path(__file__).resolve().parents[3] / "shared" / "seeds" / "004_5414db61c94361e8.txt"
SEED_CALLS = (
    """curl -X POST https://api.aigateway.sh/v1/sub-accounts \\
-H "Authorization: Bearer sk-aig-..." \\
-H "Content-Type: application/json" \\
-d '{
"name": "acme-corp",
"spend_cap_cents": 50000,
"rate_limit_rpm": 300,
"default_tag": "acme"
}'""",
    """curl https://api.aigateway.sh/v1/sub-accounts/sa_9f3k.../usage?window=30d \\
-H "Authorization: Bearer sk-aig-..." """.rstrip(),
    """curl -X PATCH https://api.aigateway.sh/v1/sub-accounts/sa_9f3k... \\
-H "Authorization: Bearer sk-aig-..." \\
-d '{ "spend_cap_cents": 100000 }'""",
)


def test_the_seed_calls_are_verbatim() -> None:
    if not SEED_004.exists():
        pytest.skip(f"seed file {SEED_004} not present in this checkout's parent (provenance check only)")
    text = SEED_004.read_text()
    for call in SEED_CALLS:
        assert call in text, call


@dataclass
class CurlReply:
    status: int
    body: dict[str, Any]
    sent_content_type: str | None  # what curl put on the wire, from its verbose log


def curl(call: str, replace: dict[str, str]) -> CurlReply:
    """Run a seed call with the real curl, exactly as written but for the host, token and id placeholders."""
    argv = shlex.split(call.replace("\\\n", " "))
    for placeholder, value in replace.items():
        argv = [arg.replace(placeholder, value) for arg in argv]
    assert argv[0] == "curl"
    done = subprocess.run(
        ["curl", "--silent", "--show-error", "--verbose", "--write-out", "\n%{http_code}", *argv[1:]],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    sent = re.search(r"^> Content-Type: (.+?)\r?$", done.stderr, re.MULTILINE | re.IGNORECASE)
    return CurlReply(int(status), json.loads(body), sent.group(1) if sent else None)


def stored_event(stack: Stack, client_id: str, timeout_s: float = 10.0) -> UsageEvent:
    """The sub-account's admitted request, once its meter finished (after the response) and the writer stored it."""
    runtime = stack.served.runtime
    assert runtime is not None
    deadline = time.monotonic() + timeout_s
    while True:
        runtime.writer.flush()
        with runtime.app.db.read() as session:
            event = session.query(UsageEvent).filter_by(client_id=client_id, decision="allowed").one_or_none()
            if event is not None:
                session.expunge(event)
                return event
        assert time.monotonic() < deadline, "the request's usage event was not stored"
        time.sleep(0.05)


def test_the_seed_curl_calls_as_written_through_envoy(stack: Stack) -> None:
    """The seed's curl calls byte for byte: its PATCH sends no content type, so curl sends
    `application/x-www-form-urlencoded` with a JSON body; that is read as the JSON it is."""
    replace = {"https://api.aigateway.sh": stack.envoy.url, "sk-aig-...": admin_token("demo")}
    created = curl(SEED_CALLS[0], replace)
    assert created.status == 201, created.body
    assert created.sent_content_type == "application/json"
    sa = created.body
    assert (sa["name"], sa["spend_cap_cents"], sa["rate_limit_rpm"], sa["default_tag"]) == (
        "acme-corp",
        50000,
        300,
        "acme",
    )
    replace["sa_9f3k..."] = sa["id"]

    reply = stack.sdk(sa["key"]).chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=50)
    assert reply.usage is not None
    stored_event(stack, sa["id"])

    usage = curl(SEED_CALLS[1], replace)
    assert usage.status == 200, usage.body
    assert usage.body["summary"]["requests"] == 1 and usage.body["summary"]["cost_nanos"] > 0
    assert [m["model_id"] for m in usage.body["by_model"]] == ["openai/gpt-4o-mini"]
    assert len(usage.body["by_day"]) == 1

    patched = curl(SEED_CALLS[2], replace)
    assert patched.sent_content_type == "application/x-www-form-urlencoded"  # curl's default for -d
    assert patched.status == 200, patched.body
    assert patched.body["spend_cap_cents"] == 100000
    assert stack.admin.get(f"/v1/sub-accounts/{sa['id']}").json()["spend_cap_cents"] == 100000

    # Real form fields are refused clearly, and change nothing.
    form = SEED_CALLS[2].replace("""'{ "spend_cap_cents": 100000 }'""", "'spend_cap_cents=5'")
    refused = curl(form, replace)
    assert (refused.status, refused.body["error"]["code"]) == (415, "unsupported_media_type")
    assert "form fields are not accepted" in refused.body["error"]["message"]
    assert stack.admin.get(f"/v1/sub-accounts/{sa['id']}").json()["spend_cap_cents"] == 100000
