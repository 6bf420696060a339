"""The Check decisions through the real Envoy, as the official SDKs see them: refusals as each SDK's own exception
type, TPM limits per scope and per model with their rate-limit headers, monitor mode, requests that can never fit,
and the request id the provider receives."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
from sqlalchemy import select

from tests.support.envoy import GatewayStack, running_stack

pytestmark = pytest.mark.envoy
PROMPT = [{"role": "user", "content": "Say something about gateways."}]
TPM = 3000  # each limited request below reserves ~2,010 tokens (prompt estimate + max_tokens 2,000): one fits
BIG = {"max_tokens": 2000, "extra_headers": {"x-fake-output-tokens": "2000"}}  # and settles at about as much

# scope -> (the key whose requests it limits, the x-quotagate-limit-scope it is reported as)
SCOPES = {
    "organization": ("org-tpm-key", "organization:org-tpm"),
    "project": ("project-tpm-key", "project:proj-tpm"),
    "client": ("client-tpm-key", "client:client-tpm"),
    "key": ("key-tpm-key", "key:key-tpm-key"),
}
DISABLED = {
    "client-off-key": "client_disabled",
    "project-off-key": "project_disabled",
    "org-off-key": "organization_disabled",
}


def _project(project_id: str, keys: dict[str, str], status: str = "active") -> dict[str, Any]:
    """A project with one client per key: keys maps key id -> client id."""
    return {
        "project_id": project_id,
        "project_slug": project_id.removeprefix("proj-"),
        "project_name": project_id,
        "status": status,
        "clients": [
            {"client_id": client, "client_name": client, "api_keys": [{"key_id": key}]} for key, client in keys.items()
        ],
    }


def _org(org_id: str, status: str, quotas: list[dict[str, Any]], *projects: dict[str, Any]) -> dict[str, Any]:
    slug = org_id.removeprefix("org-")
    return {
        "organization_id": org_id,
        "organization_slug": slug,
        "organization_name": org_id,
        "status": status,
        "quotas": quotas,
        "projects": list(projects),
    }


def _decisions(doc: dict[str, Any]) -> None:
    org = doc["organizations"][0]
    org["projects"] += [
        _project("proj-tpm", {"project-tpm-key": "client-project-tpm"}),
        _project("proj-client-tpm", {"client-tpm-key": "client-tpm"}),
        _project("proj-key-tpm", {"key-tpm-key": "client-key-tpm"}),
        _project("proj-model", {"model-key": "client-model"}),
        _project("proj-watch", {"monitor-key": "client-monitor"}),
        _project("proj-small", {"small-key": "client-small", "ant-small-key": "client-ant-small"}),
        _project("proj-misc", {"ant-rpm-key": "client-ant-rpm", "broke-key": "client-broke"}),
        _project("proj-off", {"project-off-key": "client-project-off"}, status="disabled"),
        _project("proj-client-off", {"client-off-key": "client-off"}),
    ]
    org["projects"][-1]["clients"][0]["status"] = "disabled"
    org["quotas"] += [
        {"scope_type": "project", "project_id": "proj-tpm", "tpm_limit": TPM},
        {"scope_type": "client", "client_id": "client-tpm", "tpm_limit": TPM},
        {"scope_type": "key", "key_id": "key-tpm-key", "tpm_limit": TPM},
        {"scope_type": "project", "project_id": "proj-model", "tpm_limit": TPM, "applies_to_models": ["gpt-5.4"]},
        {"scope_type": "key", "key_id": "monitor-key", "tpm_limit": 100, "enforcement_mode": "monitor"},
        {"scope_type": "project", "project_id": "proj-small", "tpm_limit": 1000},
        {"scope_type": "key", "key_id": "ant-rpm-key", "rpm_limit": 1},
        {"scope_type": "key", "key_id": "broke-key", "monthly_spend_limit": "0.000001", "monthly_spend_unit": "usd"},
    ]
    doc["organizations"] += [
        _org(
            "org-tpm",
            "active",
            [{"scope_type": "organization", "tpm_limit": TPM}],
            _project("proj-org-tpm", {"org-tpm-key": "client-org-tpm"}),
        ),
        _org("org-off", "disabled", [], _project("proj-org-off", {"org-off-key": "client-org-off"})),
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    with running_stack(tmp_path_factory.mktemp("decisions"), edit=_decisions) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _clear_provider_log(gw: GatewayStack) -> None:
    gw.fake.clear_requests()


@pytest.fixture(scope="module")
def keys(gw: GatewayStack) -> dict[str, str]:
    """Credentials of every key of the module (issued once)."""
    ids = [*(k for k, _ in SCOPES.values()), *DISABLED, "model-key", "monitor-key", "small-key", "ant-small-key"]
    return {key_id: gw.issue_key(key_id) for key_id in [*ids, "ant-rpm-key", "broke-key"]}


def _events_of(gw: GatewayStack, key_id: str) -> list[Any]:
    from quotagate.store.tables import UsageEvent

    gw.runtime.writer.flush()
    with gw.runtime.app.db.read() as session:
        rows = list(session.scalars(select(UsageEvent).where(UsageEvent.key_id == key_id)))
        for row in rows:
            session.expunge(row)
    return rows


def _refused_after_one(admit: Callable[[], Any], error: type[Exception]) -> Any:
    """The exception of the request after one that filled the window. A window that ended between the two (fixed
    one-minute windows) lets the second in: then the pair is tried once more, in the new window."""
    for _ in range(2):
        window = int(time.time() // 60)
        admit()
        try:
            admit()
        except error as exc:
            return exc
        assert int(time.time() // 60) != window, "the second request was admitted within the same window"
    raise AssertionError("never refused")


# -- refusals as each SDK's own exception


def test_a_bad_body_is_the_sdks_bad_request_error(gw: GatewayStack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gw.openai().chat.completions.create(model="gpt-4o-mini", messages=PROMPT, extra_body={"max_tokens": "ten"})
    assert caught.value.status_code == 400 and caught.value.type == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError) as refused:
        gw.anthropic().messages.create(
            model="claude-sonnet-4-6", max_tokens=8, messages=PROMPT, extra_body={"max_tokens": "ten"}
        )
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert gw.fake.requests() == []


def test_anthropic_refusals_are_the_anthropic_sdks_exceptions(gw: GatewayStack, keys: dict[str, str]) -> None:
    with pytest.raises(anthropic.AuthenticationError) as unauthenticated:
        gw.anthropic("demo-key.wrong-secret-000000000000").messages.create(
            model="claude-sonnet-4-6", max_tokens=8, messages=PROMPT
        )
    assert unauthenticated.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.PermissionDeniedError) as forbidden:
        gw.anthropic(keys["client-off-key"]).messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=PROMPT)
    assert forbidden.value.response.headers["x-quotagate-deny-reason"] == "client_disabled"
    assert forbidden.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        gw.anthropic().messages.create(model="claude-imaginary", max_tokens=8, messages=PROMPT)
    with pytest.raises(anthropic.NotFoundError) as wrong_provider:
        gw.anthropic().messages.create(model="openai/gpt-4o-mini", max_tokens=8, messages=PROMPT)
    assert "serves anthropic models only" in wrong_provider.value.message
    client = gw.anthropic(keys["ant-rpm-key"])
    limited = _refused_after_one(
        lambda: client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=PROMPT),
        anthropic.RateLimitError,
    )
    assert limited.body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(limited.response.headers["retry-after"]) <= 60
    assert limited.response.headers["x-ratelimit-limit-requests"] == "1"
    assert all(r["path"] == "/v1/messages" for r in gw.fake.requests())


@pytest.mark.parametrize(("key_id", "reason"), list(DISABLED.items()))
def test_a_disabled_client_project_or_organization_is_403_with_its_reason(
    gw: GatewayStack, keys: dict[str, str], key_id: str, reason: str
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        gw.openai(keys[key_id]).chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    assert caught.value.code == reason
    assert caught.value.response.headers["x-quotagate-deny-reason"] == reason
    assert gw.fake.requests() == []


def test_another_providers_model_on_an_endpoint_is_404_and_never_forwarded(gw: GatewayStack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        gw.openai().chat.completions.create(model="anthropic/claude-sonnet-4-6", messages=PROMPT)
    assert caught.value.code == "model_not_found"
    assert "serves openai models only" in caught.value.message
    assert gw.fake.requests() == []


# -- TPM limits and their headers


@pytest.mark.parametrize("scope", list(SCOPES))
def test_tpm_is_enforced_on_each_scope_with_rate_limit_headers(
    gw: GatewayStack, keys: dict[str, str], scope: str
) -> None:
    key_id, reported_scope = SCOPES[scope]
    client = gw.openai(keys[key_id])
    caught = _refused_after_one(
        lambda: client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, **BIG), openai.RateLimitError
    )
    assert caught.code == "rate_limit_tpm"
    headers = caught.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-limit-tokens"] == str(TPM)
    assert 0 <= int(headers["x-ratelimit-remaining-tokens"]) < 2010
    assert 1 <= int(headers["x-ratelimit-reset-tokens"].removesuffix("s")) <= 60
    assert headers["x-quotagate-limit-scope"] == reported_scope
    assert "x-should-retry" not in headers  # waiting for the next window does help
    event = _events_of(gw, key_id)[-1]
    assert (event.decision, event.deny_reason, event.status) == ("denied", "rate_limit_tpm", 429)


def test_a_per_model_tpm_limit_leaves_the_other_models_alone(gw: GatewayStack, keys: dict[str, str]) -> None:
    client = gw.openai(keys["model-key"])
    caught = _refused_after_one(
        lambda: client.chat.completions.create(model="gpt-5.4", messages=PROMPT, **BIG), openai.RateLimitError
    )
    assert caught.response.headers["x-ratelimit-limit-tokens"] == str(TPM)
    for _ in range(3):  # three times the gpt-5.4 limit, in the same window: not limited, not refused
        raw = client.chat.completions.with_raw_response.create(model="gpt-5.4-mini", messages=PROMPT, **BIG)
        assert raw.status_code == 200
        assert "x-ratelimit-limit-tokens" not in raw.headers  # no TPM limit applies to gpt-5.4-mini here


def test_monitor_mode_never_denies_but_records(gw: GatewayStack, keys: dict[str, str]) -> None:
    client = gw.openai(keys["monitor-key"])
    raws = [client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=PROMPT, **BIG) for _ in "ab"]
    assert [r.status_code for r in raws] == [200, 200]  # each is 20 times the monitored limit of 100
    for raw in raws:
        event = gw.usage_event(raw.headers["x-quotagate-request-id"])
        assert event.decision == "allowed"
        assert event.tags["monitor"].startswith("tpm:")
    assert len(gw.fake.requests()) == 2


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_request_larger_than_the_tpm_limit_is_not_retried_by_the_sdk(
    gw: GatewayStack, keys: dict[str, str], sdk: str
) -> None:
    key_id = "small-key" if sdk == "openai" else "ant-small-key"
    before = len(_events_of(gw, key_id))
    started = time.monotonic()
    # The SDKs' default retry policy (max_retries=2) retries a 429 unless told not to.
    if sdk == "openai":
        client = openai.OpenAI(base_url=gw.openai_base_url, api_key=keys[key_id])
        assert client.max_retries == 2
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=2000)
        error: openai.APIStatusError | anthropic.APIStatusError = caught.value
        assert caught.value.code == "request_exceeds_tpm"
    else:
        ant = anthropic.Anthropic(base_url=gw.envoy.url, api_key=keys[key_id])
        assert ant.max_retries == 2
        with pytest.raises(anthropic.RateLimitError) as refused:
            ant.messages.create(model="claude-haiku-4-5", messages=PROMPT, max_tokens=2000)
        error = refused.value
    assert time.monotonic() - started < 5  # no back-off sleeps either
    assert error.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.response.headers
    assert "more than the limit of 1000 tokens per minute" in error.message
    events = _events_of(gw, key_id)[before:]
    assert [(e.status, e.deny_reason) for e in events] == [(429, "request_exceeds_tpm")]  # one attempt, no retries
    assert gw.fake.requests() == []


def test_a_spend_cap_429_names_its_scope_and_is_not_retried(gw: GatewayStack, keys: dict[str, str]) -> None:
    client = openai.OpenAI(base_url=gw.openai_base_url, api_key=keys["broke-key"])  # default retries
    before = len(_events_of(gw, "broke-key"))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    assert caught.value.code == "insufficient_quota" and caught.value.type == "insufficient_quota"
    assert "monthly spend cap of key broke-key" in caught.value.message
    headers = caught.value.response.headers
    assert headers["x-should-retry"] == "false" and headers["x-quotagate-limit-scope"] == "key:broke-key"
    assert len(_events_of(gw, "broke-key")) - before == 1
    assert gw.fake.requests() == []


# -- the request id the provider receives


def test_the_provider_gets_a_request_id_and_a_callers_own_is_kept(gw: GatewayStack) -> None:
    raw = gw.openai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=PROMPT)
    assert raw.status_code == 200
    assert gw.fake.last_request()["headers"]["x-request-id"]  # set although the SDK sent none

    mine = "client-trace-0001"
    raw = gw.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=PROMPT, extra_headers={"x-request-id": mine}
    )
    assert gw.fake.last_request()["headers"]["x-request-id"] == mine
    event = gw.usage_event(raw.headers["x-quotagate-request-id"])
    assert event.request_id != mine  # the gateway's own id keys the event; the caller's is a tag
    assert event.tags["caller_request_id"] == mine
