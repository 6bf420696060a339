"""The addon under mitmproxy's test harness, over a fresh embedded store (SQLite + in-process counters)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from mitmproxy import addonmanager, hooks, http
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.options import Options
from mitmproxy.test import taddons, tflow, tutils

from addons.quotagate_gateway import QuotagateAddon
from quotagate.runtime import GatewayRuntime
from tests.addons.mitmdump import AddonStack, edge_case_keys, running_addon_stack
from tests.support.gateway import apply_manifest, edit_manifest, issue_key, manifest_text

OPENAI_KEY = "sk-provider-openai"
ANTHROPIC_KEY = "sk-ant-provider"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]}


@dataclass
class Gateway:
    addon: QuotagateAddon
    ctx: taddons.context
    credential: str

    @property
    def runtime(self) -> GatewayRuntime:
        rt = self.addon._runtime
        assert rt is not None
        return rt

    async def send(self, flow: http.HTTPFlow) -> http.HTTPFlow:
        """The request side: requestheaders, then request (what mitmproxy runs before going upstream)."""
        self.addon.requestheaders(flow)
        await self.addon.request(flow)
        return flow


def gateway_flow(
    credential: str | None,
    body: dict[str, Any] | bytes | None = None,
    *,
    path: str = "/v1/chat/completions",
    header: str = "authorization",
    **extra: str,
) -> http.HTTPFlow:
    raw = body if isinstance(body, bytes) else orjson.dumps(CHAT if body is None else body)
    headers = http.Headers(host="127.0.0.1:8080", content_type="application/json", accept_encoding="gzip")
    headers["content-length"] = str(len(raw))
    for name, value in extra.items():
        headers[name.replace("_", "-")] = value
    if credential is not None:
        headers[header] = f"Bearer {credential}" if header == "authorization" else credential
    request = tutils.treq(method=b"POST", host="127.0.0.1", port=8080, path=path.encode(), headers=headers, content=raw)
    return tflow.tflow(req=request)


def proxy_options(connection_strategy: str = "lazy") -> Options:
    """mitmdump's options for `taddons.context(..., options=)`: the core ones plus the proxy server's (declared
    by mitmproxy's own addon), with `connection_strategy` as `--set` gives it before scripts load."""
    options = Options()
    Proxyserver().load(addonmanager.Loader(SimpleNamespace(options=options)))
    options.update(connection_strategy=connection_strategy)
    return options


def configure_all(ctx: taddons.context, addon: QuotagateAddon) -> None:
    """What mitmproxy does when it loads a script: configure with every option."""
    ctx.master.addons.invoke_addon_sync(addon, hooks.ConfigureHook(set(ctx.options.keys())))


def upstream_response(body: bytes, content_type: str, status: int = 200) -> http.Response:
    return tutils.tresp(status_code=status, headers=http.Headers(content_type=content_type), content=body)


@pytest.fixture(scope="package")
def addon_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AddonStack]:
    """One real mitmdump with the addon for the end-to-end modules, with the edge-case keys."""
    workdir = tmp_path_factory.mktemp("addon")
    with running_addon_stack(workdir, edit=edge_case_keys, extra_keys=("rpm-key", "mini-only-key")) as stack:
        yield stack


@pytest.fixture
def provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", OPENAI_KEY)
    monkeypatch.setenv("QUOTAGATE_DEMO_ANTHROPIC_KEY", ANTHROPIC_KEY)


ManifestEdit = Callable[[dict[str, Any]], None]


def demo_manifest(edit: ManifestEdit | None = None) -> str:
    text = manifest_text()
    return edit_manifest(text, edit) if edit else text


async def start_gateway(manifest: str) -> AsyncIterator[Gateway]:
    apply_manifest(manifest)
    credential = issue_key("demo-key")
    addon = QuotagateAddon()
    with taddons.context(addon, options=proxy_options()) as ctx:
        configure_all(ctx, addon)
        await addon.running()
        try:
            yield Gateway(addon, ctx, credential)
        finally:
            await addon.done()


@pytest.fixture
async def gw(provider_env: None) -> AsyncIterator[Gateway]:
    async for gateway in start_gateway(demo_manifest()):
        yield gateway


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)
