"""Governance through the real Envoy: the IP allowlist sees the address Envoy reports (127.0.0.1 allowed,
127.0.0.2 denied), actor headers are verified and never reach the provider, prompts are logged redacted."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select

from quotagate.governance.actors import ACTOR_HEADER, SIGNATURE_HEADER, sign_actor
from quotagate.store.tables import PromptLog
from tests.support.envoy import GatewayStack, running_stack

pytestmark = pytest.mark.envoy
SECRET = "envoy-actor-secret"
SECRET_VAR = "QG_TEST_ENVOY_ACTOR_SECRET"


def _governance(doc: dict[str, Any]) -> None:
    project = doc["organizations"][0]["projects"][0]
    project["actors"] = {"policy": "optional", "signing_secret": f"env:{SECRET_VAR}"}
    project["prompt_logging"] = {"mode": "redacted", "retention_days": 1}
    project["clients"][0]["api_keys"][0]["ip_allowlist"] = ["127.0.0.1/32", "::1/128"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    os.environ[SECRET_VAR] = SECRET
    try:
        with running_stack(tmp_path_factory.mktemp("governance"), edit=_governance) as stack:
            yield stack
    finally:
        os.environ.pop(SECRET_VAR, None)


def post_from(gw: GatewayStack, source: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    """POST through Envoy from `source` (the client socket is bound to it)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.post(
            gw.envoy.url + "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {gw.credential}", **headers},
        )


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi, I am ann@example.com"}]}


def test_the_allowed_loopback_address_gets_through(gw: GatewayStack) -> None:
    response = post_from(gw, "127.0.0.1", CHAT)
    assert response.status_code == 200, response.text
    assert gw.usage_event(response.headers["x-quotagate-request-id"]).decision == "allowed"


def test_another_loopback_address_is_denied(gw: GatewayStack) -> None:
    response = post_from(gw, "127.0.0.2", CHAT)
    assert response.status_code == 403
    assert response.headers["x-quotagate-deny-reason"] == "ip_not_allowed"
    assert response.json()["error"]["code"] == "ip_not_allowed"
    event = gw.usage_event(response.headers["x-quotagate-request-id"])
    assert (event.decision, event.deny_reason, event.key_id) == ("denied", "ip_not_allowed", "demo-key")
    assert event.tags["client_ip"] == "127.0.0.2"


def test_a_forged_forwarded_for_does_not_help(gw: GatewayStack) -> None:
    """No trusted proxies are configured: the address is the one Envoy saw, whatever the header says."""
    response = post_from(gw, "127.0.0.2", CHAT, **{"x-forwarded-for": "127.0.0.1"})
    assert response.status_code == 403


def test_signed_actor_is_recorded_and_not_forwarded(gw: GatewayStack) -> None:
    actor = sign_actor(SECRET, gw.credential.partition(".")[0], {"user": "ann", "team": "ml"}, int(time.time()))
    response = post_from(gw, "127.0.0.1", CHAT, **actor)
    assert response.status_code == 200
    event = gw.usage_event(response.headers["x-quotagate-request-id"])
    assert (event.tags["actor.user"], event.tags["actor.team"]) == ("ann", "ml")
    upstream = gw.fake.requests()[-1]["headers"]
    assert ACTOR_HEADER not in upstream and SIGNATURE_HEADER not in upstream


def test_the_prompt_is_logged_redacted_off_the_request_path(gw: GatewayStack) -> None:
    response = post_from(gw, "127.0.0.1", CHAT)
    request_id = response.headers["x-quotagate-request-id"]
    gw.usage_event(request_id)  # the response side finished
    deadline = time.monotonic() + 10
    while True:
        with gw.runtime.app.db.read() as session:
            row = session.scalar(select(PromptLog).where(PromptLog.request_id == request_id))
            if row is not None and row.request_body and row.response_text is not None:
                break
        assert time.monotonic() < deadline, "the prompt log was not written"
        time.sleep(0.05)
    assert orjson.loads(row.request_body)["messages"][0]["content"] == "Hi, I am [REDACTED:email]"
    assert row.response_text  # what the fake provider answered
