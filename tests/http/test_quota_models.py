"""Per-model quotas through the admin API: `applies_to_models` limits some models without refusing the others,
and an admin change is enforced by the serving process before the API answers (no wait for the config poll)."""

from __future__ import annotations

import pytest

from quotagate.gateway.outcome import Allow
from tests.http.conftest import Api, call_gateway, denial, issue_key_credential


@pytest.fixture
def slowest_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """The slowest config poll allowed (1 s): whatever the test sees at once is not the poll's doing."""
    monkeypatch.setenv("QUOTAGATE_CONFIG_REFRESH_MS", "800")


async def test_applies_to_models_through_the_admin_api(slowest_poll: None, api: Api) -> None:
    key = await issue_key_credential(api)
    created = await api.post(
        "/admin/quotas",
        {
            "quota_id": "gpt54-tpm",
            "scope_type": "project",
            "scope_id": "proj-demo",
            "tpm_limit": 1500,
            "applies_to_models": ["openai/gpt-5.4"],
        },
    )
    assert created.status_code == 201, created.text
    quota = created.json()
    assert (quota["applies_to_models"], quota["model_allowlist"]) == (["openai/gpt-5.4"], None)
    # Enforced at once in this process: the second gpt-5.4 request no longer fits (unsettled, each holds its
    # reservation of ~1,010 tokens); other models are untouched.
    assert isinstance(await call_gateway(api.runtime, key, model="gpt-5.4", max_tokens=1000, usage=None), Allow)
    assert denial(await call_gateway(api.runtime, key, model="gpt-5.4", max_tokens=1000, usage=None))["error"][
        "code"
    ] == ("rate_limit_tpm")
    for _ in range(3):
        assert isinstance(
            await call_gateway(api.runtime, key, model="gpt-5.4-mini", max_tokens=1000, usage=None), Allow
        )

    both = await api.patch(f"/admin/quotas/{quota['quota_id']}", {"model_allowlist": ["gpt-5.4"]})
    assert both.status_code == 422 and "exclusive" in both.json()["error"]["message"], both.text
    unknown = await api.post(
        "/admin/quotas",
        {"scope_type": "project", "scope_id": "proj-demo", "rpm_limit": 1, "applies_to_models": ["gpt-9"]},
    )
    assert unknown.status_code == 422 and "no rate" in unknown.json()["error"]["message"], unknown.text

    cleared = await api.patch(f"/admin/quotas/{quota['quota_id']}", {"applies_to_models": None})
    assert cleared.status_code == 200 and cleared.json()["applies_to_models"] is None
    # Now the 1,500 TPM covers every model of the project, gpt-5.4-mini included, at once.
    assert denial(await call_gateway(api.runtime, key, model="gpt-5.4-mini", max_tokens=1000, usage=None))["error"][
        "code"
    ] == ("rate_limit_tpm")
