"""The rendered TLS upstream works end to end: SNI and certificate name from `ssl_name`, a private CA.

The fake provider serves HTTPS with a throwaway CA's certificate for `localhost`; the manifest points
the upstream at 127.0.0.1 with `ssl_name: localhost`, exactly as a real one points at api.openai.com:443
with `ssl_name: api.openai.com`. A wrong `ssl_name` must fail the handshake, never fall back to plain text.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.support.envoy import running_stack

pytestmark = pytest.mark.envoy


def test_tls_upstream_with_sni_serves_and_meters(tmp_path: Path) -> None:
    with running_stack(tmp_path, tls_name="localhost") as gw:
        client = gw.openai()
        r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert r.usage is not None and r.usage.completion_tokens > 0
        seen = gw.fake.last_request()
        assert seen["headers"]["authorization"].startswith("Bearer sk-upstream-openai")
        stream = list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
        assert stream[-1].usage is not None
        stats = gw.envoy.stats("cluster.upstream_openai_local.ssl")
        assert stats.get("cluster.upstream_openai_local.ssl.handshake", 0) >= 1
        assert stats.get("cluster.upstream_openai_local.ssl.fail_verify_san", 0) == 0
        # Envoy dials 127.0.0.1 and names the manifest's ssl_name in every handshake's SNI.
        names = gw.fake.connections()["tls_server_names"]
        assert names and set(names) == {"localhost"}


def test_a_wrong_ssl_name_fails_closed(tmp_path: Path) -> None:
    with running_stack(tmp_path, tls_name="api.openai.com") as gw:
        with pytest.raises(openai.APIStatusError) as info:
            gw.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 503
        assert gw.fake.requests() == []
        stats = gw.envoy.stats("cluster.upstream_openai_local.ssl")
        assert stats.get("cluster.upstream_openai_local.ssl.fail_verify_san", 0) >= 1
        names = gw.fake.connections()["tls_server_names"]
        assert names and set(names) == {"api.openai.com"}  # the name asked for is the name checked
