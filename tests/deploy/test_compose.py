"""compose.yaml, run for real: every service's command and environment as local processes on loopback.

No Docker engine runs here, so this test reads compose.yaml, resolves its variables, maps service host
names to loopback addresses (the two `quotagate` replicas on 127.0.0.1 and 127.0.0.2, as compose's DNS
gives each replica its own address), container paths to a temp dir, and Redis/PostgreSQL to the test
servers; then it starts the services in dependency order and drives the result with the OpenAI SDK.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.conftest import REPO
from tests.support.pg import PgDatabases
from tests.support.servers import delete_redis_prefix, redis_url
from tests.support.throwaway import free_port, wait_port

pytestmark = [pytest.mark.envoy, pytest.mark.postgres, pytest.mark.redis]
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}")


def interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} in every string of the file."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, op, arg = m.group(1), m.group(2), m.group(3) or ""
            if env.get(name):
                return env[name]
            if op == "?":
                raise AssertionError(f"compose would refuse to start: {arg}")
            return arg if op == "-" else ""

        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


@pytest.fixture
def compose(tmp_path: Path, pg_databases: PgDatabases) -> dict[str, object]:
    env = {
        "QUOTAGATE_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "QUOTAGATE_LEDGER_SIGNING_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "POSTGRES_PASSWORD": "not-used-with-trust-auth",
    }
    doc = interpolate(yaml.safe_load((REPO / "compose.yaml").read_text()), env)
    assert isinstance(doc, dict)
    return {"doc": doc, "db": pg_databases.new_database(migrated=False), "tmp": tmp_path}


def test_compose_services_work_together(compose: dict[str, object]) -> None:
    doc, db_url, tmp = compose["doc"], str(compose["db"]), Path(str(compose["tmp"]))
    assert isinstance(doc, dict)
    services = doc["services"]
    assert set(services) == {"postgres", "redis", "migrate", "quotagate", "envoy-config", "envoy", "fake-provider"}
    assert services["quotagate"]["deploy"]["replicas"] == 2
    assert services["fake-provider"]["profiles"] == ["demo"]

    ports = {p: free_port() for p in (50051, 50080, 10000, 9901, 18080)}
    paths = {
        "/etc/quotagate/manifest.yaml": tmp / "manifest.yaml",
        "/etc/envoy": tmp / "envoy",
        "/var/lib/quotagate": tmp / "home",
    }
    (tmp / "envoy").mkdir()
    manifest = (
        (REPO / "examples" / "compose-demo.yaml")
        .read_text()
        .replace("fake-provider:18080", f"127.0.0.1:{ports[18080]}")
    )
    # A low RPM shows that two workers enforce one shared limit.
    manifest = manifest.replace("rpm_limit: 600", "rpm_limit: 5")
    paths["/etc/quotagate/manifest.yaml"].write_text(manifest)
    replicas = ["127.0.0.1", "127.0.0.2"]
    prefix = f"compose-{uuid.uuid4().hex[:8]}"  # this run's keys in the shared test Redis

    def local(arg: str, replica: int = 0) -> list[str]:
        for container, host in paths.items():
            arg = arg.replace(container, str(host))
        if arg.startswith("0.0.0.0:"):
            port = int(arg.split(":")[1])
            return [f"{replicas[replica] if port in (50051, 50080) else '127.0.0.1'}:{ports[port]}"]
        if arg == "quotagate:50051":  # STRICT_DNS: every replica
            return [a for r in replicas for a in ("--grpc", f"{r}:{ports[50051]}")][1:]
        if arg == "quotagate:50080":
            return [f"{replicas[0]}:{ports[50080]}"]
        if arg in {str(p) for p in ports}:
            return [str(ports[int(arg)])]
        return [arg]

    def environment(name: str) -> dict[str, str]:
        values = {k: str(v) for k, v in (services[name].get("environment") or {}).items()}
        db = values.get("QUOTAGATE_DATABASE_URL", "")
        assert db.startswith("postgresql+psycopg://quotagate:") and db.endswith("@postgres:5432/quotagate")
        assert values.get("QUOTAGATE_REDIS_URL") == "redis://redis:6379/0"
        values |= {
            "QUOTAGATE_DATABASE_URL": db_url,
            "QUOTAGATE_REDIS_URL": redis_url(),
            "QUOTAGATE_REDIS_PREFIX": prefix,
            "QUOTAGATE_HOME": str(paths["/var/lib/quotagate"]),
        }
        return {**os.environ, **values}

    def argv(name: str, replica: int = 0) -> list[str]:
        cmd = [a for arg in services[name]["command"] for a in local(arg, replica)]
        binary = {
            "quotagate": [sys.executable, "-m", "quotagate"],
            "envoy": [str(Path(sys.executable).with_name("envoy"))],
        }
        return [*binary[cmd[0]], *cmd[1:]]

    started: list[subprocess.Popen[bytes]] = []
    logs = tmp / "logs"
    logs.mkdir()

    def start(name: str, replica: int = 0, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (logs / f"{name}-{replica}.log").open("wb")
        proc = subprocess.Popen(argv(name, replica), env=env or environment(name), stdout=log, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    def healthy(name: str, replica: int = 0) -> None:
        test = services[name]["healthcheck"]["test"][1:]
        code = test[-1]
        for port, mapped in ports.items():
            code = code.replace(f":{port}/", f":{mapped}/")
        code = code.replace("127.0.0.1", replicas[replica]) if name == "quotagate" else code
        deadline = time.monotonic() + 60
        while subprocess.run([sys.executable, "-c", code], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, (logs / f"{name}-{replica}.log").read_text()
            time.sleep(0.2)

    try:
        fake = subprocess.Popen(
            argv("fake-provider"), env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        started.append(fake)
        wait_port(ports[18080])
        assert start("migrate").wait(120) == 0, (logs / "migrate-0.log").read_text()
        for i in range(2):
            start("quotagate", i)
        for i in range(2):
            healthy("quotagate", i)
        assert start("envoy-config").wait(120) == 0, (logs / "envoy-config-0.log").read_text()
        start("envoy", env=os.environ.copy())
        healthy("envoy")

        key = subprocess.run(
            [sys.executable, "-m", "quotagate", "keys", "issue", "demo-key"],
            env=environment("migrate"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{ports[10000]}/v1", api_key=key, max_retries=0)
        outcomes = []
        for _ in range(8):
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
                outcomes.append("ok")
            except openai.RateLimitError:
                outcomes.append("429")
        assert outcomes.count("ok") == 5 and outcomes.count("429") == 3, outcomes
        # Both workers decided some of them: the limit is shared, not per process.
        decided = [_decisions(f"http://{r}:{ports[50080]}/metrics") for r in replicas]
        assert all(d > 0 for d in decided) and sum(decided) == 8, decided
    finally:
        delete_redis_prefix(redis_url(), prefix)
        for proc in reversed(started):
            proc.terminate()
        for proc in started:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _decisions(url: str) -> int:
    text = httpx.get(url).text
    found = re.search(r"^quotagate_decision_seconds_count (\S+)$", text, re.M)
    return int(float(found.group(1))) if found else 0
