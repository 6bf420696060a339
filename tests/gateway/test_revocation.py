"""Revocation, suspension and policy changes made by another process take effect here within 1 second."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from quotagate.gateway.outcome import Allow, Deny
from tests.support.gateway import apply_manifest, chat_request, issue_key, manifest_text, running_runtime


@pytest.mark.parametrize(("verb", "reason"), [("revoke", "key_revoked"), ("suspend", "key_suspended")])
async def test_a_key_changed_by_another_process_is_refused_within_a_second(
    verb: str, reason: str, use_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", "sk-test")
    apply_manifest(manifest_text())
    cred = issue_key("demo-key")
    async with running_runtime() as rt:  # default refresh (250 ms), as in production
        assert isinstance(await rt.gatekeeper.check(chat_request(cred)), Allow)
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "quotagate", "keys", verb, "demo-key"],
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
        assert (out.status, out.reason) == (403, reason)
        assert time.monotonic() - changed_at < 1.0
