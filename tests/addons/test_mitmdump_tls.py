"""A TLS upstream through a real mitmdump, as behind Envoy: SNI and the certificate's name are the `ssl_name`.

The fake provider serves HTTPS with a throwaway CA's certificate for localhost (mitmproxy trusts that CA
through ssl_verify_upstream_trusted_ca); the manifest points the upstream at 127.0.0.1 with `ssl_name:
localhost`, as tests/envoy/test_tls_upstream.py does for Envoy. A wrong `ssl_name` fails closed.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.addons.mitmdump import running_addon_stack
from tests.support.envoy import PROVIDER_KEYS

PROMPT = [{"role": "user", "content": "hi"}]


def test_the_ssl_name_is_the_sni_and_the_session_summary_shows_at_quiet_verbosity(tmp_path: Path) -> None:
    quiet = ("--set", "termlog_verbosity=error")
    with running_addon_stack(tmp_path, tls_name="localhost", options=quiet, quiet=True) as gw:
        client = gw.openai()
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
        assert completion.usage is not None and completion.usage.completion_tokens > 0
        assert gw.fake.last_request()["headers"]["authorization"] == f"Bearer {PROVIDER_KEYS['openai']}"
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, stream=True))
        assert chunks[-1].usage is not None
        names = gw.fake.connections()["tls_server_names"]
        # The addon's certificate check and mitmproxy's own connection: both dial 127.0.0.1 and name localhost.
        assert len(names) >= 2 and set(names) == {"localhost"}, names
        output = gw.mitmdump.stop()
    assert "Quotagate session: 2 request(s) metered, 0 denied" in output  # printed, not a log line
    assert "demo-key  gpt-4o-mini  2" in output


def test_a_certificate_not_valid_for_the_ssl_name_fails_closed_with_envoys_503(tmp_path: Path) -> None:
    with running_addon_stack(tmp_path, tls_name="api.openai.com") as gw:
        with pytest.raises(openai.InternalServerError) as caught:
            gw.openai().chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
        assert caught.value.status_code == 503
        error = caught.value.response.json()["error"]
        assert error["type"] == "api_error"
        assert "does not verify for api.openai.com" in error["message"]
        assert gw.fake.requests() == []  # the provider key never left
        assert set(gw.fake.connections()["tls_server_names"]) == {"api.openai.com"}
        event = gw.usage_event(caught.value.response.headers["x-quotagate-request-id"])
        assert (event.status, event.decision, event.cost_nanos) == (503, "allowed", 0)
