"""Revocation, suspension and policy changes made by another process take effect here within 1 second.

The other process is the `quotagate` CLI; this process only runs its runtime (the config poll of production, no
manual refresh). On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quotagate.errors import ConfigError
from quotagate.gateway.outcome import Allow, Deny
from quotagate.settings import load_settings
from tests.support.gateway import apply_manifest, chat_request, edit_manifest, issue_key, manifest_text, running_runtime


def _disable_client(doc: dict) -> None:  # type: ignore[type-arg]
    doc["organizations"][0]["projects"][0]["clients"][0]["status"] = "disabled"


def _only_gpt54(doc: dict) -> None:  # type: ignore[type-arg]
    doc["organizations"][0]["quotas"].append(
        {"scope_type": "project", "project_id": "proj-demo", "rpm_limit": 100, "model_allowlist": ["gpt-5.4"]}
    )


# Each case starts a CLI process (seconds on a loaded box), so one per path: a key status change (suspend takes
# the same path as revoke), a manifest change to the tenancy, and one to a quota's policy.
CHANGES = {
    "revoke": (["keys", "revoke", "demo-key"], None, (403, "key_revoked")),
    "disable-client": (["manifest", "apply"], _disable_client, (403, "client_disabled")),
    "restrict-models": (["manifest", "apply"], _only_gpt54, (403, "model_not_allowed")),
}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_change_made_by_another_process_is_enforced_within_a_second(
    change: str, use_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", "sk-test")
    argv, edit, refused = CHANGES[change]
    apply_manifest(manifest_text())
    cred = issue_key("demo-key")
    if edit is not None:
        manifest = tmp_path / "changed.yaml"
        manifest.write_text(edit_manifest(manifest_text(), edit))
        argv = [*argv, str(manifest)]
    async with running_runtime() as rt:  # default refresh (250 ms), as in production
        assert isinstance(await rt.gatekeeper.check(chat_request(cred)), Allow)
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "quotagate", *argv],
            env=dict(os.environ),
            check=True,
            capture_output=True,
        )
        changed_at = time.monotonic()
        while True:
            out = await rt.gatekeeper.check(chat_request(cred))
            if isinstance(out, Deny):
                break
            assert time.monotonic() - changed_at < 1.0, "still admitted a second after the change"
            await asyncio.sleep(0.02)
        assert (out.status, out.reason) == refused
        assert time.monotonic() - changed_at < 1.0


@pytest.mark.parametrize("refresh_ms", [0, 801, 1000, 5000])
def test_the_config_poll_cannot_be_configured_past_a_second(refresh_ms: int) -> None:
    with pytest.raises(ConfigError, match="QUOTAGATE_CONFIG_REFRESH_MS"):
        load_settings(config_refresh_ms=refresh_ms)
    assert load_settings(config_refresh_ms=800).config_refresh_ms == 800
