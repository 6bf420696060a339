"""`quotagate dev`: the gateway on a laptop, as mitmdump with the Quotagate addon in front of each provider.

Applies the manifest, then runs `mitmdump -s addons/quotagate_addon.py` (a subprocess: the core never
imports mitmproxy) with one reverse-proxy listener per provider, and prints the URLs and an SDK snippet.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from quotagate.apis import Provider
from quotagate.app import open_app
from quotagate.cli.common import actor
from quotagate.errors import ConfigError
from quotagate.manifest.desired import desired_state
from quotagate.manifest.load import load_file
from quotagate.snapshot import Snapshot, UpstreamView
from quotagate.store.manifest_apply import apply_plan, plan_manifest
from quotagate.store.snapshot_loader import load_snapshot

LISTEN_HOST = "127.0.0.1"  # a laptop gateway holds provider keys: never listen beyond loopback
_READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Listener:
    provider: Provider
    upstream: UpstreamView
    port: int

    @property
    def mode(self) -> str:
        scheme = "https" if self.upstream.tls else "http"
        return f"reverse:{scheme}://{_host(self.upstream.host)}:{self.upstream.port}@{self.port}"

    @property
    def base_url(self) -> str:
        """What the provider's SDK takes as base_url (the OpenAI SDK wants the /v1 in it)."""
        url = f"http://{LISTEN_HOST}:{self.port}"
        return url + "/v1" if self.provider is Provider.OPENAI else url


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser(
        "dev",
        help="run the gateway locally: mitmdump with the Quotagate addon, one reverse proxy per provider",
        description="Everything after `--` goes to mitmdump (or mitmweb), e.g. `-- --set flow_detail=0`.",
    )
    dev.add_argument("--manifest", help="apply this manifest first (default: the configuration already stored)")
    dev.add_argument(
        "--port", type=int, default=8080, help="port of the first provider's listener; the next get +1 (default 8080)"
    )
    dev.add_argument("--web", action="store_true", help="run mitmweb: flows, their costs and denials in a browser")
    dev.add_argument("mitmproxy_args", nargs="*", help=argparse.SUPPRESS)
    dev.set_defaults(func=_dev)


def listeners(snapshot: Snapshot, first_port: int) -> list[Listener]:
    """One listener per provider with a route, towards that provider's first route's upstream.

    The addon sends each request to the upstream the core routes it to, so the target only matters for
    requests the core does not route; the listener a provider's SDK uses is what keeps URLs obvious."""
    found: list[Listener] = []
    for provider in Provider:
        route = next((r for r in snapshot.routes if r.provider is provider), None)
        if route is not None and route.upstream in snapshot.upstreams:
            found.append(Listener(provider, snapshot.upstreams[route.upstream], first_port + len(found)))
    return found


def mitmproxy_argv(executable: str, script: str, found: list[Listener], extra: list[str]) -> list[str]:
    argv = [executable, "-s", script, "--set", "connection_strategy=lazy", "--set", f"listen_host={LISTEN_HOST}"]
    for listener in found:
        argv += ["--mode", listener.mode]
    return argv + extra


def banner(snapshot: Snapshot, found: list[Listener]) -> str:
    lines = ["Quotagate dev gateway (mitmproxy + the Quotagate addon) is listening:"]
    for listener in found:
        up = listener.upstream
        target = f"{'https' if up.tls else 'http'}://{_host(up.host)}:{up.port}"
        lines.append(f"  {listener.provider.value:<10} {listener.base_url:<28} -> {target}")
    key_id = next((k.key_id for k in snapshot.keys.values() if k.status == "active"), "KEY_ID")
    lines += ["", f"Gateway key: `quotagate keys issue {key_id}` prints one; export it as QUOTAGATE_KEY.", ""]
    for listener in found:
        models = snapshot.models_of(listener.provider)
        model = models[0] if models else "MODEL"
        if listener.provider is Provider.OPENAI:
            lines += [
                "  import os, openai",
                f'  client = openai.OpenAI(base_url="{listener.base_url}", api_key=os.environ["QUOTAGATE_KEY"])',
                f'  client.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": "Hi"}}])',
            ]
        else:
            lines += [
                "  import os, anthropic",
                f'  client = anthropic.Anthropic(base_url="{listener.base_url}", api_key=os.environ["QUOTAGATE_KEY"])',
                f'  client.messages.create(model="{model}", max_tokens=100, messages=[{{"role": "user", "content": "Hi"}}])',
            ]
        lines.append("")
    lines.append("Each flow's comment shows its tokens, cost and budget left; Ctrl-C prints the session's usage.")
    return "\n".join(lines)


def _dev(args: argparse.Namespace) -> int:
    app = open_app()
    try:
        if args.manifest:
            desired = desired_state(load_file(args.manifest))
            with app.db.transaction() as session:
                plan = plan_manifest(session, desired)
                apply_plan(session, desired, plan, actor=f"{actor()} dev {args.manifest}")
            print(f"{args.manifest}: " + ("no changes" if plan.empty else f"applied: {plan.summary()}"))
        with app.db.read() as session:
            snapshot = load_snapshot(session)
    finally:
        app.close()
    found = listeners(snapshot, args.port)
    if not found:
        raise ConfigError("the configuration has no routes to serve: apply a manifest with --manifest FILE")
    argv = mitmproxy_argv(_executable("mitmweb" if args.web else "mitmdump"), _script(), found, args.mitmproxy_args)
    return _run(argv, [listener.port for listener in found], banner(snapshot, found))


def _run(argv: list[str], ports: list[int], ready_text: str) -> int:
    proc = subprocess.Popen(argv)

    def stop(*_: object) -> None:
        # mitmproxy shuts down gracefully on SIGTERM: the addon settles open flows and prints the summary.
        proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if _wait_listening(proc, ports):
            print(ready_text, flush=True)
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_listening(proc: subprocess.Popen[bytes], ports: list[int]) -> bool:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    pending = list(ports)
    while pending and proc.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection((LISTEN_HOST, pending[0]), timeout=0.5).close()
            pending.pop(0)
        except OSError:
            time.sleep(0.1)
    return not pending


def _executable(name: str) -> str:
    """mitmproxy's command from this interpreter's environment, else from PATH."""
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise ConfigError(f"{name} is not installed: pip install 'mitmproxy>=11.0,<11.1' (see addons/README.md)")
    return found


def _script() -> str:
    spec = importlib.util.find_spec("addons.quotagate_addon")  # located, not imported: it imports mitmproxy
    if spec is None or spec.origin is None:
        raise ConfigError("the Quotagate mitmproxy addon (addons/quotagate_addon.py) is not installed")
    return spec.origin


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
