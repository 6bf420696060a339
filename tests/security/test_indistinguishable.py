"""An unknown key id and a wrong secret are indistinguishable: status, body, headers (through the real Envoy,
both SDKs, both Check transports) and time (in-process, interleaved, medians compared), and so are admin tokens.

Timing is compared at two depths. `authenticate` alone is where a shortcut would hide (an early return for an
unknown id skips the ~1 us hash); there the comparison is tight enough to catch one, which the test proves by
catching a deliberately broken copy each run. A whole Check and an admin-token verification take 50-300 us, so
there the tolerance only catches gross differences (an extra query, a lookup done for one case only); the hash
work is pinned by counting it instead."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx
import openai
import pytest

from quotagate.app import open_app
from quotagate.identity.authenticate import AuthFailure, authenticate
from quotagate.identity.credentials import Credential, SecretHasher
from quotagate.snapshot import Snapshot
from quotagate.store import keys_repo
from quotagate.store.admin_tokens_repo import issue_admin_token, revoke_admin_token, verify_admin_token
from quotagate.store.snapshot_loader import load_snapshot
from tests.security.conftest import blank_ids, comparable_body, comparable_headers, demo_runtime
from tests.support.envoy import GatewayStack, running_stack
from tests.support.gateway import apply_manifest, chat_request, edit_manifest, issue_key, manifest_text

PROMPT = [{"role": "user", "content": "Hello"}]
SECRET = "S" * 43  # well-formed, never issued
# Generous: a whole decision's medians differ by a few percent here; this only trips on gross differences.
WHOLE_PATH_TOLERANCE = 1.5
# authenticate's medians differ by ~3%; skipping the hash makes one side ~8x faster.
HASH_TOLERANCE = 1.5
SHORTCUT_DETECTED = 2.5


def _edge_keys(doc: dict[str, Any]) -> None:
    client = doc["organizations"][0]["projects"][0]["clients"][0]
    client["api_keys"] += [{"key_id": "suspended-key", "status": "suspended"}, {"key_id": "revoked-key"}]


@pytest.fixture(scope="module", params=["grpc-check", "http-check"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayStack, str]]:
    """The stack, and the (right) credential of its suspended key."""
    with running_stack(
        tmp_path_factory.mktemp("indistinguishable"),
        edit=_edge_keys,
        check_over_http=request.param == "http-check",
        auth_failure_limit=0,  # many failures from one address here: the throttle is tested elsewhere
    ) as stack:
        suspended = stack.issue_key("suspended-key")
        stack.set_key_status("suspended-key", "suspend")
        stack.issue_key("revoked-key")
        stack.set_key_status("revoked-key", "revoke")
        yield stack, suspended


def _failing_credentials(gw: GatewayStack) -> dict[str, str]:
    """Every way a credential can fail to verify, which the caller must not be able to tell apart."""
    key_id = gw.credential.split(".", 1)[0]
    return {
        "unknown id": f"nobody-key.{SECRET}",
        "wrong secret": f"{key_id}.{SECRET}",
        "suspended key, wrong secret": f"suspended-key.{SECRET}",  # its status is only told to its holder
        "revoked key, wrong secret": f"revoked-key.{SECRET}",
        "malformed": "not-a-credential",
    }


def _seen(exc: openai.APIStatusError | anthropic.APIStatusError) -> tuple[Any, ...]:
    r = exc.response
    message = blank_ids(str(exc))
    return (type(exc), exc.status_code, message, comparable_body(r.content), comparable_headers(r.headers))


@pytest.mark.envoy
def test_both_sdks_raise_the_same_error_for_every_failing_credential(gw: tuple[GatewayStack, str]) -> None:
    stack, suspended = gw
    seen_openai, seen_anthropic, seen_raw = {}, {}, {}
    for case, credential in _failing_credentials(stack).items():
        with pytest.raises(openai.AuthenticationError) as o:
            stack.openai(credential).chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
        seen_openai[case] = _seen(o.value)
        with pytest.raises(anthropic.AuthenticationError) as a:
            stack.anthropic(credential).messages.create(model="claude-sonnet-4-6", max_tokens=16, messages=PROMPT)
        seen_anthropic[case] = _seen(a.value)
        r = httpx.post(
            stack.openai_base_url + "/chat/completions",
            json={"model": "gpt-4o-mini", "messages": PROMPT},
            headers={"X-API-Token": credential},
        )
        seen_raw[case] = (r.status_code, comparable_body(r.content), comparable_headers(r.headers))

    for seen in (seen_openai, seen_anthropic, seen_raw):
        first, *rest = seen.values()
        assert all(other == first for other in rest), seen
    status, body, headers = seen_raw["unknown id"]
    assert status == 401
    assert body["error"]["code"] == "invalid_credential" and body["error"]["message"] == "Invalid gateway key."
    assert headers["x-quotagate-deny-reason"] == "invalid_credential"
    assert seen_anthropic["unknown id"][3]["error"]["type"] == "authentication_error"
    # The right secret of the suspended key does tell its holder (who proved it) what is wrong.
    with pytest.raises(openai.PermissionDeniedError):
        stack.openai(suspended).chat.completions.create(model="gpt-4o-mini", messages=PROMPT)


# -- timing, in-process


def _medians(first: Callable[[], object], second: Callable[[], object], rounds: int, batch: int) -> tuple[float, float]:
    """Median time of `batch` calls of each, alternating which goes first every round (drift hits both)."""
    times: tuple[list[int], list[int]] = ([], [])
    for i in range(rounds):
        order = ((0, first), (1, second)) if i % 2 else ((1, second), (0, first))
        for side, fn in order:
            started = time.perf_counter_ns()
            for _ in range(batch):
                fn()
            times[side].append(time.perf_counter_ns() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def _ratio(a: float, b: float) -> float:
    return max(a, b) / min(a, b)


def _snapshot_with_a_rotated_key() -> tuple[Snapshot, SecretHasher, str]:
    """The demo manifest; `demo-key` issued, `revoked-key` (still active here) issued and rotated so its
    previous secret is in its grace period."""
    apply_manifest(edit_manifest(manifest_text(), _edge_keys))
    issue_key("demo-key")
    app = open_app()
    try:
        with app.db.transaction(immediate=True) as session:
            keys_repo.issue_key(session, app.hasher, "revoked-key", actor="test")
            keys_repo.rotate_key(session, app.hasher, "revoked-key", grace=timedelta(hours=1), actor="test")
        with app.db.read() as session:
            snapshot = load_snapshot(session)
    finally:
        app.close()
    assert snapshot.keys["revoked-key"].previous_secret_hash is not None
    return snapshot, app.hasher, "demo-key"


def _skipping_the_hash(snapshot: Snapshot, hasher: SecretHasher, credential: Credential, now: datetime) -> object:
    """What the test must catch: an early return for an unknown id, before any hashing."""
    if credential.key_id not in snapshot.keys:
        return AuthFailure.INVALID_CREDENTIAL
    return authenticate(snapshot, hasher, credential, now)


def test_authenticate_spends_the_same_time_on_an_unknown_id_and_a_wrong_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", "unused")
    snapshot, hasher, key_id = _snapshot_with_a_rotated_key()
    now = datetime.now(UTC)
    unknown, wrong, rotated = (Credential(k, SECRET) for k in ("nobody-key", key_id, "revoked-key"))
    for c in (unknown, wrong, rotated):
        assert authenticate(snapshot, hasher, c, now) is AuthFailure.INVALID_CREDENTIAL

    def timed(fn: Any, a: Credential, b: Credential) -> float:
        return _ratio(*_medians(lambda: fn(snapshot, hasher, a, now), lambda: fn(snapshot, hasher, b, now), 1500, 20))

    # The test's power, measured on this machine now: the shortcut it exists to catch is caught.
    assert timed(_skipping_the_hash, wrong, unknown) > SHORTCUT_DETECTED
    assert timed(authenticate, wrong, unknown) < HASH_TOLERANCE
    assert timed(authenticate, rotated, unknown) < HASH_TOLERANCE  # a key in its grace period does not show


class _CountingHasher(SecretHasher):
    def __init__(self) -> None:
        super().__init__()
        self.hashes = 0

    def hash(self, key_id: str, secret: str) -> str:
        self.hashes += 1
        return super().hash(key_id, secret)


def test_every_failing_gateway_credential_costs_exactly_one_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", "unused")
    snapshot, _, key_id = _snapshot_with_a_rotated_key()
    hasher = _CountingHasher()
    now = datetime.now(UTC)
    for key in ("nobody-key", key_id, "revoked-key"):
        before = hasher.hashes
        assert authenticate(snapshot, hasher, Credential(key, SECRET), now) is AuthFailure.INVALID_CREDENTIAL
        assert hasher.hashes == before + 1, key


async def test_a_whole_check_takes_as_long_for_an_unknown_id_as_for_a_wrong_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QUOTAGATE_DEMO_OPENAI_KEY", "unused")
    async with demo_runtime(auth_failure_limit=0) as (rt, credential):
        requests = (chat_request(f"nobody-key.{SECRET}"), chat_request(f"{credential.split('.')[0]}.{SECRET}"))
        times: tuple[list[int], list[int]] = ([], [])
        for i in range(1500):
            for side in (0, 1) if i % 2 else (1, 0):
                started = time.perf_counter_ns()
                denied = await rt.gatekeeper.check(requests[side])
                times[side].append(time.perf_counter_ns() - started)
                assert denied.status == 401
        assert _ratio(statistics.median(times[0]), statistics.median(times[1])) < WHOLE_PATH_TOLERANCE


def test_admin_tokens_take_as_long_and_as_much_hashing_for_an_unknown_id_as_for_a_wrong_secret() -> None:
    app = open_app()
    try:
        with app.db.transaction(immediate=True) as session:
            _, live = issue_admin_token(session, app.hasher, organization=None, name=None, actor="test")
            _, revoked = issue_admin_token(session, app.hasher, organization=None, name=None, actor="test")
            revoke_admin_token(session, revoked.key_id, actor="test")
        now = datetime.now(UTC)
        cases = {
            "unknown id": f"qga-0123456789abcdef.{SECRET}",
            "wrong secret": f"{live.key_id}.{SECRET}",
            "revoked, wrong secret": f"{revoked.key_id}.{SECRET}",
        }
        counting = _CountingHasher()
        for case, raw in cases.items():
            before = counting.hashes
            assert verify_admin_token(app.db, counting, raw, now) is None, case
            assert counting.hashes == before + 1, case
        assert verify_admin_token(app.db, app.hasher, str(live), now) is not None

        def verify(raw: str) -> Callable[[], object]:
            return lambda: verify_admin_token(app.db, app.hasher, raw, now)

        unknown, wrong = _medians(verify(cases["unknown id"]), verify(cases["wrong secret"]), 1000, 1)
        assert _ratio(unknown, wrong) < WHOLE_PATH_TOLERANCE
    finally:
        app.close()
