"""Upstream credential rotation across processes, with nothing but the normal config poll.

`quotagate serve` in a process of its own answers Check behind a real Envoy; the admin API runs in another
runtime (this test's process). A PUT of the provider key through Envoy's listener reaches the API; the serve
process must put the new key on the wire within 2 seconds, as the fake provider records it. The secret
appears nowhere it could be read back: not in the admin ledger, the audit rows, the response or any log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import select

from quotagate.apis import Provider
from quotagate.app import open_app
from quotagate.fake_provider.testing import FakeProvider, running_fake_provider
from quotagate.settings import load_settings
from quotagate.store.tables import AdminAuditEvent
from tests.http.conftest import admin_token, bearer
from tests.http.threaded import serving_in_thread
from tests.support.envoy import (
    PROVIDER_KEYS,
    EnvoyProcess,
    prepare_home,
    running_front_envoy,
    running_serve_process,
    stack_manifest,
    stored_snapshot,
)

pytestmark = pytest.mark.envoy
PROMPT = [{"role": "user", "content": "Hello"}]
NEW_KEY = "sk-rotated-across-processes-0123456789abcdef"
EFFECTIVE_WITHIN_S = 2.0


@dataclass
class Stack:
    fake: FakeProvider
    envoy: EnvoyProcess
    credential: str  # demo-key's gateway credential
    logs: list[Path]


@pytest.fixture
def stack(tmp_path: Path, isolated_home: Path) -> Iterator[Stack]:
    with running_fake_provider() as fake:
        settings = load_settings()
        credential = prepare_home(settings, stack_manifest(fake.base_url.removeprefix("http://")), "demo-key")
        snapshot = stored_snapshot(settings)
        serve_log = tmp_path / "serve.log"
        # The serve process learns of changes only through its config poll (every 50 ms here).
        env = {"QUOTAGATE_CONFIG_REFRESH_MS": "50"}
        with (
            running_serve_process(isolated_home, log_path=serve_log, extra_env=env) as serve,
            serving_in_thread(settings) as api,
            running_front_envoy(
                snapshot,
                tmp_path / "envoy",
                grpc_endpoints=(serve.grpc_address,),
                http_side=("127.0.0.1", int(api.url.rsplit(":", 1)[1])),
            ) as envoy,
        ):
            yield Stack(fake, envoy, credential, [serve_log, envoy.log_path, envoy.access_log_path])


def upstream_key(stack: Stack, client: openai.OpenAI) -> str:
    """Send one request through Envoy; the provider key the fake provider received for it."""
    stack.fake.clear_requests()
    client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=5)
    [request] = stack.fake.requests()
    authorization: str = request["headers"]["authorization"]
    return authorization.removeprefix("Bearer ")


def test_a_rotated_upstream_key_is_used_by_another_process_within_seconds(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.envoy.url + "/v1", api_key=stack.credential, max_retries=0)
    assert upstream_key(stack, client) == PROVIDER_KEYS[Provider.OPENAI]

    token = admin_token()
    with httpx.Client(base_url=stack.envoy.url, headers=bearer(token), timeout=30) as admin:
        put = admin.put("/admin/upstreams/openai/credential", json={"api_key": NEW_KEY})
        rotated_at = time.monotonic()
        assert put.status_code == 200, put.text
        assert NEW_KEY not in put.text

        seen = []
        while True:
            seen.append(upstream_key(stack, client))
            if seen[-1] == NEW_KEY:
                break
            assert seen[-1] == PROVIDER_KEYS[Provider.OPENAI], seen  # never anything else on the way
            assert time.monotonic() - rotated_at < EFFECTIVE_WITHIN_S, f"still the old key after {len(seen)} requests"
        assert upstream_key(stack, client) == NEW_KEY  # and it stays

        # The rotation is audited (who, what, before/after versions) without the secret.
        entries, cursor = [], None
        while True:
            page = admin.get("/admin/ledger", params={"kind": "admin", **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            assert NEW_KEY not in page.text
            entries += page.json()["data"]
            if (cursor := page.json()["next_cursor"]) is None:
                break
    [rotation] = [e for e in entries if e["data"]["action"] == "upstream.set_key" and e["data"]["actor"] != "test"]
    assert rotation["data"]["actor"] == f"admin-token:{token.split('.')[0]}"
    assert rotation["data"]["target_id"] == "openai"
    assert (rotation["data"]["before"], rotation["data"]["after"]) == (
        {"source": "stored", "version": 1},
        {"source": "stored", "version": 2},
    )

    app = open_app()
    with app.db.read() as session:
        audit = [(e.before, e.after, e.target_id) for e in session.scalars(select(AdminAuditEvent))]
    app.close()
    assert audit and NEW_KEY not in repr(audit)
    for log in stack.logs:
        assert NEW_KEY not in log.read_text(errors="replace"), log
