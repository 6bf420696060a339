"""No secret leaks: a realistic mixed load through the real Envoy, then every sink is scanned.

Secrets: gateway key secrets (issued, rotated, a sub-account's, the pepper), admin token secrets (live and
revoked), provider keys (the first ones and the ones rotated in through the admin API), the master key and
the ledger signing key. Load: allowed and refused requests over both SDKs, streams, streams the provider cuts,
clients that hang up, provider errors, portal calls, admin API calls (key rotation, sub-accounts, idempotent
replays, refused and invalid calls), provider key rotation.

Sinks: Envoy's log, access log, rendered config and admin dumps; Quotagate's log records (every logger of the
gateway, at DEBUG); /metrics; every response header and error body a client received; usage events, ledger
entries and prompt logs (one project logs prompts redacted, the other not at all); every file of the home
(SQLite database and WAL, spool, checkpoints); on PostgreSQL, a pg_dump. A secret may appear in none of them,
raw, base64-encoded, or as any 16-character piece. Provider keys must reach the fake provider (and nothing
else); gateway secrets never do.

The scanner proves it can fail: after the clean scan, a value is planted in the log, the database, Envoy's
access log and a client's error body, and the same scan must find it in exactly those sinks."""

from __future__ import annotations

import base64
import logging
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from quotagate.apis import Provider
from quotagate.metering.record import UsageRecord
from quotagate.store.admin_tokens_repo import issue_admin_token, revoke_admin_token
from quotagate.store.tables import LedgerEntry, PromptLog, UsageEvent
from tests.support.envoy import PROVIDER_KEYS, GatewayStack, running_stack
from tests.support.servers import in_ci

pytestmark = pytest.mark.envoy
PROMPT = [{"role": "user", "content": "Summarise the quarterly numbers, please."}]
WINDOW = 16  # a leaked piece at least this long counts
CLIENT_LOGGERS = ("openai", "anthropic", "httpx", "httpcore", "hpack", "h2", "h11", "urllib3", "asyncio")
PROVIDER_LOGGERS = ("quotagate.fake_provider",)  # the fake plays the provider, which must see provider keys
ISSUING = ("/issue", "/rotate", "/v1/sub-accounts")  # success bodies that show a new secret once, by design


def _edit(doc: dict[str, Any]) -> None:
    org = doc["organizations"][0]
    org["projects"][0]["prompt_logging"] = {"mode": "redacted", "retention_days": 1}
    org["projects"].append(
        {
            "project_id": "proj-quiet",
            "project_slug": "quiet",
            "project_name": "No prompt logging",
            "clients": [{"client_id": "client-quiet", "client_name": "quiet", "api_keys": [{"key_id": "quiet-key"}]}],
        }
    )


@dataclass
class Recorded:
    """Every response a client of this test received: headers always, bodies of errors (and of admin calls)."""

    headers: list[str] = field(default_factory=list)
    error_bodies: list[bytes] = field(default_factory=list)
    success_bodies: list[bytes] = field(default_factory=list)

    def hook(self, response: httpx.Response) -> None:
        self.headers.append(f"{response.status_code} {response.request.url.path} {dict(response.headers)}")
        if response.status_code >= 400:
            response.read()
            self.error_bodies.append(response.content)

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(timeout=30, event_hooks={"response": [self.hook]}, **kw)


class LogCapture(logging.Handler):
    """The gateway's log records, formatted with their arguments, extras and tracebacks."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self._format = logging.Formatter("%(levelname)s %(name)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith((*CLIENT_LOGGERS, *PROVIDER_LOGGERS)):
            return
        self.lines.append(self._format.format(record))
        self.lines.append(repr({k: v for k, v in vars(record).items() if k not in ("msg", "args")}))


@contextmanager
def captured_logs() -> Iterator[LogCapture]:
    """Gateway loggers at DEBUG (SQL statements with their parameters at INFO) into one capture."""
    handler = LogCapture()
    levels = {"quotagate": logging.DEBUG, "ext_authz": logging.DEBUG, "uvicorn": logging.DEBUG}
    levels["sqlalchemy.engine"] = logging.INFO  # every statement and its parameters: what reached the database
    saved = {name: logging.getLogger(name).level for name in levels}
    targets = [logging.getLogger(), logging.getLogger("quotagate.access")]  # the access logger may not propagate
    for logger in targets:
        logger.addHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield handler
    finally:
        for logger in targets:
            logger.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _pieces(value: str) -> set[str]:
    """What counts as `value` leaking: itself, base64 of it, and 16-character pieces of it."""
    raw = value.encode()
    found = {value, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    if len(value) > WINDOW:
        found |= {value[:WINDOW], value[len(value) // 2 - WINDOW // 2 :][:WINDOW], value[-WINDOW:]}
    return found


def leaks(secrets_by_label: dict[str, str], sinks: dict[str, bytes]) -> list[tuple[str, str]]:
    """(sink, secret label) for every secret found in a sink."""
    found = []
    for sink, data in sinks.items():
        for label, value in secrets_by_label.items():
            if any(piece.encode() in data for piece in _pieces(value)):
                found.append((sink, label))
    return sorted(found)


def _secret_of(credential: str) -> str:
    return credential.split(".", 1)[1]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> str | None:
    """None: the embedded SQLite file in the home; else a fresh PostgreSQL database (pg_dump is then required)."""
    if request.param == "sqlite":
        return None
    if shutil.which("pg_dump") is None:
        message = "pg_dump is not on PATH: the PostgreSQL dump cannot be scanned"
        if in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(f"SKIPPED LOUDLY: {message}")
    url: str = request.getfixturevalue("pg_databases").new_database()
    return url


@dataclass
class Run:
    stack: GatewayStack
    recorded: Recorded
    logs: LogCapture
    database: str | None
    secrets: dict[str, str] = field(default_factory=dict)  # label -> secret that must appear nowhere
    provider_keys: dict[str, str] = field(default_factory=dict)  # label -> key that must reach the provider
    request_ids: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.stack.envoy.url

    def openai(self, credential: str, http: httpx.Client) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.stack.openai_base_url, api_key=credential, max_retries=0, http_client=http)

    def anthropic(self, credential: str, http: httpx.Client) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=credential, max_retries=0, http_client=http)


def _gateway_load(run: Run, http: httpx.Client, credential: str) -> None:
    """Allowed, streamed, cut, abandoned, failed and refused requests with one gateway key."""
    oa, an = run.openai(credential, http), run.anthropic(credential, http)
    reply = oa.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=32)
    run.request_ids.append(reply.headers["x-quotagate-request-id"])
    assert "".join(
        c.choices[0].delta.content or ""
        for c in oa.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, stream=True)
        if c.choices
    )
    an.messages.create(model="claude-sonnet-4-6", max_tokens=32, messages=PROMPT)
    with an.messages.stream(model="claude-sonnet-4-6", max_tokens=32, messages=PROMPT) as stream:
        assert stream.get_final_text()
    oa.embeddings.create(model="text-embedding-3-small", input="quarterly numbers")
    oa.responses.create(model="gpt-4o-mini", input="quarterly numbers")
    with pytest.raises((openai.APIError, httpx.HTTPError)):  # the provider cuts the stream
        list(
            oa.chat.completions.create(
                model="gpt-4o-mini", messages=PROMPT, stream=True, extra_headers={"x-fake-cut-after": "3"}
            )
        )
    with pytest.raises(openai.InternalServerError):  # the provider fails
        oa.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, extra_headers={"x-fake-error-status": "500"})
    with http.stream(  # the client hangs up mid-stream
        "POST",
        run.stack.openai_base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": PROMPT, "stream": True},
        headers={"authorization": f"Bearer {credential}", "x-fake-chunk-delay-ms": "20", "x-fake-output-tokens": "50"},
    ) as response:
        run.request_ids.append(response.headers["x-quotagate-request-id"])
        lines = response.iter_lines()
        for _ in range(4):
            next(lines)
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="gpt-9-nonexistent", messages=PROMPT)
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=-1)
    key_id = credential.split(".", 1)[0]
    for wrong in (f"{key_id}.{secrets.token_urlsafe(32)}", f"nobody-key.{_secret_of(credential)}", credential[:-1]):
        with pytest.raises(openai.AuthenticationError):
            run.openai(wrong, http).chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    with pytest.raises(anthropic.AuthenticationError):
        run.anthropic(credential + "x", http).messages.create(model="claude-sonnet-4-6", max_tokens=8, messages=PROMPT)
    for path in ("/v1/models", "/api/balance"):
        assert http.get(run.url + path, headers={"authorization": f"Bearer {credential}"}).status_code == 200
        assert http.get(run.url + path, headers={"x-api-key": credential[:-2]}).status_code == 401


def _admin_load(run: Run, http: httpx.Client, root: str, org_admin: str, revoked: str) -> dict[str, str]:
    """Admin API calls through Envoy; the new gateway credentials they issued."""

    def call(method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}", **kw.pop("headers", {})}
        response = http.request(method, run.url + path, headers=headers, **kw)
        if not path.endswith(ISSUING) and not path.startswith("/v1/sub-accounts"):
            run.recorded.success_bodies.append(response.content)
        return response

    issued: dict[str, str] = {}
    assert call("GET", "/admin/keys", root).status_code == 200
    rotated = call("POST", "/admin/keys/demo-key/rotate", root, headers={"Idempotency-Key": "rotate-once-0001"})
    assert rotated.status_code == 200, rotated.text
    issued["demo-key (rotated)"] = rotated.json()["credential"]
    replay = call("POST", "/admin/keys/demo-key/rotate", root, headers={"Idempotency-Key": "rotate-once-0001"})
    assert replay.status_code == 200 and replay.json()["credential"] is None  # a replay never shows it again
    created = call(
        "POST", "/v1/sub-accounts", root, json={"name": "acme", "spend_cap_cents": 500, "organization": "demo"}
    )
    assert created.status_code == 201, created.text
    issued["sub-account"] = created.json()["key"]
    assert call("GET", "/v1/sub-accounts", org_admin).status_code == 200

    root_id = root.split(".", 1)[0]
    for bad in (f"{root_id}.{secrets.token_urlsafe(32)}", revoked, root[:-1]):
        assert call("GET", "/admin/keys", bad).status_code == 401
    assert call("GET", "/admin/keys/no-such-key", org_admin).status_code == 404

    for provider, label in ((Provider.OPENAI, "openai (rotated)"), (Provider.ANTHROPIC, "anthropic (rotated)")):
        key = run.provider_keys[label]
        body = {"api_key": key}
        assert call("PUT", f"/admin/upstreams/{provider.value}/credential", org_admin, json=body).status_code == 403
        assert (
            call("PUT", f"/admin/upstreams/{provider.value}/credential", root, json={**body, "x": 1}).status_code == 422
        )
        assert call("PUT", "/admin/upstreams/nope/credential", root, json=body).status_code == 422
        assert call("PUT", f"/admin/upstreams/{provider.value}/credential", root, json=body).status_code == 200
    return issued


def _collect(run: Run) -> tuple[dict[str, bytes], bytes]:
    """Every sink (name -> its bytes), and separately what the fake provider received."""
    stack = run.stack
    runtime = stack.runtime
    runtime.writer.flush()
    if runtime.prompt_log is not None:
        runtime.prompt_log.drain_once()
    admin = stack.envoy.admin_url
    home = stack.settings.home
    home_files = b"".join(
        path.read_bytes()
        for path in sorted(home.rglob("*"))
        if path.is_file() and path.name not in ("master.key", "ledger-signing.key")
    )
    with runtime.app.db.read() as session:
        tables = [row[0] for row in session.execute(text(_TABLES[runtime.app.db.dialect]))]
        rows = repr({t: [tuple(r) for r in session.execute(text(f'SELECT * FROM "{t}"'))] for t in tables})
    sinks = {
        "envoy log": stack.envoy.log_path.read_bytes(),
        "envoy access log": stack.envoy.access_log_path.read_bytes(),
        "envoy config": (stack.envoy.log_path.parent / "envoy.yaml").read_bytes()
        + httpx.get(admin + "/config_dump?include_eds").content
        + httpx.get(admin + "/clusters").content,
        "quotagate logs": "\n".join(run.logs.lines).encode(),
        "metrics": httpx.get(f"{stack.server.http_url}/metrics").content,
        "client headers": "\n".join(run.recorded.headers).encode(),
        "client error bodies": b"\n".join(run.recorded.error_bodies),
        "client success bodies": b"\n".join(run.recorded.success_bodies),
        "database rows": rows.encode(),
        "home files": home_files,
    }
    if run.database is not None:
        dump = subprocess.run(
            ["pg_dump", "--no-owner", make_url(run.database).set(drivername="postgresql").render_as_string(False)],
            capture_output=True,
            check=True,
            timeout=60,
        )
        sinks["pg_dump"] = dump.stdout
    provider = orjson.dumps(stack.fake.requests(), default=str)
    return sinks, provider


_TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
    "postgresql": "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
}


def _wait_for(condition: Any, what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_no_secret_reaches_any_sink(tmp_path: Path, database: str | None) -> None:
    master_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    signing_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    pepper = secrets.token_urlsafe(32)
    settings: dict[str, Any] = {"master_key": master_key, "ledger_signing_key": signing_key, "key_pepper": pepper}
    if database is not None:
        settings["database_url"] = database
    recorded = Recorded()
    with (
        captured_logs() as logs,
        running_stack(tmp_path, edit=_edit, http_side=True, **settings) as stack,
        recorded.client() as http,
    ):
        run = Run(stack, recorded, logs, database)
        run.secrets |= {"master key": master_key, "ledger signing key": signing_key, "key pepper": pepper}
        run.provider_keys = {
            "openai": PROVIDER_KEYS[Provider.OPENAI],
            "anthropic": PROVIDER_KEYS[Provider.ANTHROPIC],
            "openai (rotated)": "sk-proj-" + secrets.token_urlsafe(32),
            "anthropic (rotated)": "sk-ant-api03-" + secrets.token_urlsafe(32),
        }
        gateway = {"demo-key": stack.credential, "quiet-key": stack.issue_key("quiet-key")}
        app_db = stack.runtime.app
        with app_db.db.transaction(immediate=True) as session:
            _, root = issue_admin_token(session, app_db.hasher, organization=None, name=None, actor="test")
            _, org_admin = issue_admin_token(session, app_db.hasher, organization="demo", name=None, actor="test")
            _, revoked = issue_admin_token(session, app_db.hasher, organization=None, name=None, actor="test")
            revoke_admin_token(session, revoked.key_id, actor="test")
        admins = {
            "root admin token": str(root),
            "demo admin token": str(org_admin),
            "revoked admin token": str(revoked),
        }

        _gateway_load(run, http, gateway["demo-key"])
        _gateway_load(run, http, gateway["quiet-key"])
        gateway |= _admin_load(run, http, str(root), str(org_admin), str(revoked))
        stack.sync()
        for label in ("demo-key (rotated)", "sub-account", "demo-key"):  # the old demo secret is in its grace period
            run.openai(gateway[label], http).chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
        run.anthropic(gateway["quiet-key"], http).messages.create(
            model="claude-sonnet-4-6", max_tokens=16, messages=PROMPT
        )
        if stack.runtime.checkpointer is not None:
            stack.runtime.checkpointer.checkpoint(force=True)  # signed checkpoints land in the home too

        for request_id in run.request_ids:
            stack.usage_event(request_id)  # metering finished (the abandoned stream too)
        run.secrets |= {f"gateway {label}": _secret_of(c) for label, c in gateway.items()}
        run.secrets |= {label: _secret_of(token) for label, token in admins.items()}

        def prompt_logs() -> list[PromptLog]:
            stack.runtime.prompt_log.drain_once()  # type: ignore[union-attr]
            with stack.runtime.app.db.read() as session:
                return list(session.scalars(select(PromptLog)))

        _wait_for(lambda: any(p.response_text for p in prompt_logs()), "no prompt was logged")
        _wait_for(lambda: b"/v1/embeddings" in stack.envoy.access_log_path.read_bytes(), "no access log")
        sinks, provider = _collect(run)

        # The sinks were really read: each holds what this load must have left in it.
        with stack.runtime.app.db.read() as session:
            events = list(session.scalars(select(UsageEvent)))
            ledger = list(session.scalars(select(LedgerEntry)))
        assert len(events) >= 30 and {"allowed", "denied"} <= {e.decision for e in events}
        assert len(ledger) >= 20
        assert {p.project_id for p in prompt_logs()} == {"proj-demo"}  # the quiet project logs nothing
        assert all(p.mode == "redacted" for p in prompt_logs())
        assert b"quotagate.access" in sinks["quotagate logs"] and b"INSERT INTO" in sinks["quotagate logs"]
        assert b"quotagate_requests_total" in sinks["metrics"]
        assert len(run.recorded.error_bodies) >= 20
        assert sinks["envoy access log"].count(b"\n") >= 40

        # 1. No secret anywhere, provider keys included (they belong at the provider only).
        everything = {**run.secrets, **{f"provider key {k}": v for k, v in run.provider_keys.items()}}
        assert leaks(everything, sinks) == []
        # 2. The provider got its keys, each in its time, and nothing else secret.
        assert leaks(run.provider_keys, {"provider": provider}) == [("provider", k) for k in sorted(run.provider_keys)]
        assert leaks(run.secrets, {"provider": provider}) == []

        # 3. The scan can fail: a planted value is found in each sink it was put in.
        planted = "planted-" + secrets.token_urlsafe(24)
        logging.getLogger("quotagate.security_probe").warning("probe %s", planted)
        stack.runtime.writer.record(
            UsageRecord(
                request_id=uuid.uuid4().hex, started_at=time.time(), status=400, decision="denied", tags={"p": planted}
            )
        )
        assert http.post(run.url + "/v1/" + planted, json={}).status_code == 401  # no credential: refused
        with pytest.raises(openai.NotFoundError):
            run.openai(gateway["demo-key"], http).chat.completions.create(model=planted, messages=PROMPT)
        _wait_for(
            lambda: planted.encode() in stack.envoy.access_log_path.read_bytes(), "the access log was not written"
        )
        sinks, _ = _collect(run)
        expected = {"quotagate logs", "database rows", "envoy access log", "client error bodies"}
        expected.add("pg_dump" if database is not None else "home files")
        assert expected <= {sink for sink, _ in leaks({"planted": planted}, sinks)}
