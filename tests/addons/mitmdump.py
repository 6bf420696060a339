"""A real `mitmdump -s addons/quotagate_addon.py` for end-to-end tests, over a fresh SQLite home.

    with running_addon_stack(tmp_path) as gw:
        gw.openai().chat.completions.create(...)
        gw.usage_event(request_id)

One reverse listener per provider in front of the fake provider, `connection_strategy=lazy`, mitmproxy's
state (its CA) in the work directory, output in `workdir/mitmdump.log`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai

from quotagate.app import open_app
from quotagate.fake_provider.testing import FakeProvider, running_fake_provider
from quotagate.settings import Settings, load_settings
from quotagate.store import keys_repo
from quotagate.store.tables import UsageEvent
from tests.support.envoy import free_port, prepare_home, stack_manifest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "addons" / "quotagate_addon.py"
READY_LINE = "Quotagate ready"
_READY_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 15.0


def mitmdump_binary() -> str:
    local = Path(sys.executable).with_name("mitmdump")
    return str(local) if local.exists() else "mitmdump"


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUOTAGATE_")}
    env["QUOTAGATE_HOME"] = str(home)
    return env


@dataclass
class MitmdumpProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_listening(self, *ports: int, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Every listener accepts (when the log is too quiet to say so)."""
        deadline = time.monotonic() + timeout_s
        for port in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"mitmdump never listened on {port}:\n{self.log()}") from None
                    time.sleep(0.05)

    def wait_for(self, text: str, timeout_s: float = _READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mitmdump never logged {text!r} (exit {self.process.poll()}):\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> str:
        """SIGTERM (mitmproxy's graceful shutdown: the addon settles, flushes and logs its summary); the log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.log()


@contextmanager
def running_process(argv: list[str], *, env: dict[str, str], log_path: Path) -> Iterator[MitmdumpProcess]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc = MitmdumpProcess(process, log_path)
    try:
        yield proc
    finally:
        proc.stop()


@dataclass
class AddonStack:
    """The fake provider behind a real mitmdump running the addon; `credentials` by key id."""

    settings: Settings
    fake: FakeProvider
    mitmdump: MitmdumpProcess
    openai_port: int
    anthropic_port: int
    credentials: dict[str, str]

    @property
    def credential(self) -> str:
        return self.credentials["demo-key"]

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.openai_port}/v1"

    def openai(self, credential: str | None = None, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.openai_base_url, api_key=credential or self.credential, max_retries=0, **options
        )

    def anthropic(self, credential: str | None = None, **options: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=f"http://127.0.0.1:{self.anthropic_port}",
            api_key=credential or self.credential,
            max_retries=0,
            **options,
        )

    def usage_event(self, request_id: str, timeout_s: float = 10.0) -> UsageEvent:
        """The usage row mitmdump's writer stored for a request (it drains its spool every 50 ms)."""
        deadline = time.monotonic() + timeout_s
        app = open_app(self.settings)
        try:
            while True:
                with app.db.read() as session:
                    row = session.get(UsageEvent, request_id)
                    if row is not None:
                        session.expunge(row)
                        return row
                if time.monotonic() > deadline:
                    raise AssertionError(f"no usage event for request {request_id}:\n{self.mitmdump.log()[-3000:]}")
                time.sleep(0.05)
        finally:
            app.close()


def issue_keys(settings: Settings, key_ids: list[str]) -> dict[str, str]:
    app = open_app(settings)
    try:
        with app.db.transaction() as session:
            return {k: str(keys_repo.issue_key(session, app.hasher, k, actor="test")) for k in key_ids}
    finally:
        app.close()


def edge_case_keys(doc: dict[str, Any]) -> None:
    """Manifest edit: keys for the refusal cases, in a project of their own under the demo organization."""
    org = doc["organizations"][0]
    keys = {"rpm-key": {}, "mini-only-key": {"models": ["gpt-4o-mini"]}}
    org["projects"].append(
        {
            "project_id": "proj-edge",
            "project_slug": "edge",
            "project_name": "Edge cases",
            "clients": [
                {"client_id": f"client-{key}", "client_name": key, "api_keys": [{"key_id": key, **extra}]}
                for key, extra in keys.items()
            ],
        }
    )
    org["quotas"].append({"scope_type": "key", "key_id": "rpm-key", "rpm_limit": 1})


def mitmdump_argv(
    workdir: Path, targets: list[tuple[str, int]], *options: str, connection_strategy: str | None = "lazy"
) -> list[str]:
    """mitmdump with the addon, one reverse listener per (upstream URL, port), mitmproxy's state in `workdir`,
    then `options`; `connection_strategy` None leaves mitmproxy's default (eager)."""
    argv = [mitmdump_binary(), "-s", str(SCRIPT), "--set", f"confdir={workdir / 'mitmproxy'}"]
    if connection_strategy is not None:
        argv += ["--set", f"connection_strategy={connection_strategy}"]
    argv += ["--set", "listen_host=127.0.0.1"]
    for url, port in targets:
        argv += ["--mode", f"reverse:{url}@{port}"]
    return [*argv, *options]


@contextmanager
def running_addon_stack(
    workdir: Path,
    *,
    edit: Callable[[dict[str, Any]], None] | None = None,
    extra_keys: tuple[str, ...] = (),
    tls_name: str | None = None,
    options: tuple[str, ...] = (),
    quiet: bool = False,
    **settings: str,
) -> Iterator[AddonStack]:
    """The manifest is `stack_manifest` of examples/local-demo.yaml pointed at the fake provider, after `edit`;
    the provider keys are the stored test keys of tests/support/envoy.py (PROVIDER_KEYS).

    `tls_name`: the fake provider serves TLS (a throwaway CA, which mitmproxy is told to trust) and the upstreams
    are 127.0.0.1 with that `ssl_name`, as tests/envoy/test_tls_upstream.py does for Envoy. `options`: more
    mitmdump arguments; `quiet`: they silence the ready line, so wait for the listeners instead. `settings`:
    Settings overrides by field name, for the test process and mitmdump alike (e.g. max_request_bytes="65536")."""
    with ExitStack() as stack:
        fake = stack.enter_context(running_fake_provider(tls=tls_name is not None))
        config = load_settings(home=workdir / "home", **settings)
        upstream = fake.base_url.split("://", 1)[1]
        manifest = stack_manifest(upstream, edit=edit, ssl_name=tls_name)
        credentials = {"demo-key": prepare_home(config, manifest, "demo-key")}
        credentials.update(issue_keys(config, list(extra_keys)))
        openai_port, anthropic_port = free_port(), free_port()
        trust = ("--set", f"ssl_verify_upstream_trusted_ca={fake.ca_file}") if fake.ca_file else ()
        argv = mitmdump_argv(workdir, [(fake.base_url, openai_port), (fake.base_url, anthropic_port)], *trust, *options)
        env = clean_env(config.home) | {f"QUOTAGATE_{name.upper()}": value for name, value in settings.items()}
        mitmdump = stack.enter_context(running_process(argv, env=env, log_path=workdir / "mitmdump.log"))
        if quiet:
            mitmdump.wait_listening(openai_port, anthropic_port)
        else:
            mitmdump.wait_for(READY_LINE)
        yield AddonStack(config, fake, mitmdump, openai_port, anthropic_port, credentials)
