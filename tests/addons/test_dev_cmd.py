"""`quotagate dev`: listeners per provider, the mitmdump command line, and a real run with the OpenAI SDK."""

from __future__ import annotations

import sys
from pathlib import Path

import openai
import pytest

from quotagate.apis import Provider
from quotagate.app import open_app
from quotagate.cli.dev_cmd import banner, listeners, mitmproxy_argv
from quotagate.fake_provider.testing import running_fake_provider
from quotagate.snapshot import Snapshot
from quotagate.store.snapshot_loader import load_snapshot
from tests.addons.conftest import demo_manifest, write
from tests.addons.mitmdump import READY_LINE, clean_env, running_process
from tests.support.gateway import apply_manifest, issue_key
from tests.support.scaled import free_ports_in_a_row


def stored_snapshot() -> Snapshot:
    app = open_app()
    try:
        with app.db.read() as session:
            return load_snapshot(session)
    finally:
        app.close()


def test_one_listener_per_provider_towards_its_upstream() -> None:
    def openai_over_tls(doc: dict[str, object]) -> None:
        upstreams = doc["deployment"]["gateway"]["upstreams"]  # type: ignore[index]
        upstreams[0].update(server="api.openai.com:443", tls=True, ssl_name="api.openai.com")
        upstreams[1].update(server="[::1]:9000")

    apply_manifest(demo_manifest(openai_over_tls))
    found = listeners(stored_snapshot(), 9100)
    assert [(lst.provider, lst.port, lst.mode) for lst in found] == [
        (Provider.OPENAI, 9100, "reverse:https://api.openai.com:443@9100"),
        (Provider.ANTHROPIC, 9101, "reverse:http://[::1]:9000@9101"),
    ]
    assert [lst.base_url for lst in found] == ["http://127.0.0.1:9100/v1", "http://127.0.0.1:9101"]
    argv = mitmproxy_argv("mitmdump", "addon.py", found, ["--set", "flow_detail=0"])
    assert argv == [
        "mitmdump",
        "-s",
        "addon.py",
        "--set",
        "connection_strategy=lazy",
        "--set",
        "listen_host=127.0.0.1",
        "--mode",
        "reverse:https://api.openai.com:443@9100",
        "--mode",
        "reverse:http://[::1]:9000@9101",
        "--set",
        "flow_detail=0",
    ]


def test_the_banner_has_a_ready_to_paste_snippet_per_provider() -> None:
    apply_manifest(demo_manifest())
    snapshot = stored_snapshot()
    text = banner(snapshot, listeners(snapshot, 8080))
    assert "quotagate keys issue demo-key" in text
    assert 'openai.OpenAI(base_url="http://127.0.0.1:8080/v1", api_key=os.environ["QUOTAGATE_KEY"])' in text
    assert 'anthropic.Anthropic(base_url="http://127.0.0.1:8081", api_key=os.environ["QUOTAGATE_KEY"])' in text


@pytest.mark.usefixtures("provider_env")
def test_quotagate_dev_serves_the_sdk_and_prints_the_session_usage_on_exit(tmp_path: Path, isolated_home: Path) -> None:
    with running_fake_provider() as fake:
        manifest = write(
            tmp_path, "dev.yaml", demo_manifest().replace("127.0.0.1:18080", fake.base_url.removeprefix("http://"))
        )
        apply_manifest(Path(manifest).read_text())  # so the key exists before the gateway starts
        credential = issue_key("demo-key")
        port = free_ports_in_a_row(2)  # a listener per provider: port, port + 1
        argv = [sys.executable, "-m", "quotagate", "dev", "--manifest", manifest, "--port", str(port)]
        argv += ["--", "--set", f"confdir={tmp_path / 'mitmproxy'}"]
        env = {**clean_env(isolated_home), "QUOTAGATE_DEMO_OPENAI_KEY": "sk-dev-test"}
        with running_process(argv, env=env, log_path=tmp_path / "dev.log") as dev:
            dev.wait_for(READY_LINE)
            assert f"openai     http://127.0.0.1:{port}/v1" in dev.log()
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=credential, max_retries=0)
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
            assert fake.last_request()["headers"]["authorization"] == "Bearer sk-dev-test"
            output = dev.stop()
    assert dev.process.returncode == 0
    assert "Quotagate session: 1 request(s) metered, 0 denied" in output
    assert "demo-key  gpt-4o-mini" in output
