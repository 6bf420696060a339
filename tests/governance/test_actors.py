"""Signed actor identity: the signature format (v2 with a nonce, legacy v1), and each policy's answer to
valid, tampered, replayed (the same nonce again, also through another process sharing Redis), expired and
missing signatures, with the verified actor on usage events and in reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from quotagate.gateway.outcome import Allow, Deny
from quotagate.governance.actors import (
    ACTOR_HEADER,
    SIGNATURE_HEADER,
    ActorProblem,
    NoncePolicy,
    Verified,
    parse_actor,
    sign_actor,
    verify_actor,
)
from quotagate.governance.replay import MemoryNonces, new_nonce
from quotagate.store.reports import ReportQuery, usage_report
from tests.governance.conftest import project_of, usage_rows
from tests.support.gateway import chat_request

SECRET = "workspace-signing-secret-0123456789"
ALICE = {"user": "alice", "team": "ml", "app": "notebook"}
WINDOW = 300


def signed(key_id: str, fields: dict[str, str] = ALICE, *, at: float | None = None, v1: bool = False) -> dict[str, str]:
    """v2 headers with a fresh nonce (what clients send), or legacy v1 headers (no nonce)."""
    return sign_actor(SECRET, key_id, fields, int(time.time() if at is None else at), None if v1 else new_nonce())


def _flip_last(signature: str) -> str:
    """The signature with its last hex digit changed (always a different digit)."""
    return signature[:-1] + ("1" if signature[-1] == "0" else "0")


def key_of(credential: str) -> str:
    return credential.partition(".")[0]


# -- the format ------------------------------------------------------------------------------------


def test_the_documented_canonical_strings() -> None:
    """v2: HMAC-SHA-256(secret, "v2\\n<t>\\n<nonce>\\n<key id>\\n<fields sorted by name>") in lower-case hex;
    v1: the same without the nonce line."""
    import hashlib
    import hmac

    fields = {"user": "alice", "app": "nb", "team": "ml"}
    nonce = "3q2-7wEAAAAAAAAAAAAAAA"
    headers = sign_actor("s3cret", "demo-key", fields, 1767225600, nonce)
    assert headers[ACTOR_HEADER] == "app=nb;team=ml;user=alice"
    message = b"v2\n1767225600\n3q2-7wEAAAAAAAAAAAAAAA\ndemo-key\napp=nb;team=ml;user=alice"
    digest = hmac.new(b"s3cret", message, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"t=1767225600,n={nonce},v2={digest}"
    legacy = sign_actor("s3cret", "demo-key", fields, 1767225600)
    digest = hmac.new(b"s3cret", b"v1\n1767225600\ndemo-key\napp=nb;team=ml;user=alice", hashlib.sha256).hexdigest()
    assert legacy[SIGNATURE_HEADER] == f"t=1767225600,v1={digest}"


def test_field_order_and_spacing_do_not_matter() -> None:
    headers = signed("demo-key")
    headers[ACTOR_HEADER] = " team=ml ; user=alice;app=notebook "
    assert isinstance(verify_actor(headers, "demo-key", SECRET, time.time(), WINDOW), Verified)


def _with_nonce(headers: dict[str, str], nonce: str | None) -> str:
    parts = [p for p in headers[SIGNATURE_HEADER].split(",") if not p.startswith("n=")]
    return ",".join([*parts[:1], *([f"n={nonce}"] if nonce else []), *parts[1:]])


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda h: h.pop(ACTOR_HEADER), ActorProblem.MISSING),
        (lambda h: h.pop(SIGNATURE_HEADER), ActorProblem.UNSIGNED),
        (lambda h: h.update({ACTOR_HEADER: "user=mallory;team=ml;app=notebook"}), ActorProblem.BAD_SIGNATURE),
        (lambda h: h.update({ACTOR_HEADER: "user=alice;team=ml"}), ActorProblem.BAD_SIGNATURE),  # field dropped
        (lambda h: h.update({SIGNATURE_HEADER: _flip_last(h[SIGNATURE_HEADER])}), ActorProblem.BAD_SIGNATURE),
        (lambda h: h.update({SIGNATURE_HEADER: "v1=abc"}), ActorProblem.MALFORMED),
        (lambda h: h.update({ACTOR_HEADER: "user=alice;role=admin"}), ActorProblem.MALFORMED),  # unknown field
        (lambda h: h.update({ACTOR_HEADER: "user=al ice"}), ActorProblem.MALFORMED),
        (lambda h: h.update({ACTOR_HEADER: "user=a;user=b"}), ActorProblem.MALFORMED),
        # the nonce is covered by the signature: changing or dropping it breaks it
        (lambda h: h.update({SIGNATURE_HEADER: _with_nonce(h, "A" * 22)}), ActorProblem.BAD_SIGNATURE),
        (lambda h: h.update({SIGNATURE_HEADER: _with_nonce(h, None)}), ActorProblem.MALFORMED),  # v2 needs n
        (lambda h: h.update({SIGNATURE_HEADER: _with_nonce(h, "short")}), ActorProblem.MALFORMED),
        (lambda h: h.update({SIGNATURE_HEADER: h[SIGNATURE_HEADER].replace("v2=", "v1=")}), ActorProblem.BAD_SIGNATURE),
    ],
)
def test_problems(mutate: Callable[[dict[str, str]], Any], problem: ActorProblem) -> None:
    headers = signed("demo-key")
    mutate(headers)
    assert verify_actor(headers, "demo-key", SECRET, time.time(), WINDOW) is problem


def test_the_nonce_policy() -> None:
    now = time.time()
    v1, v2 = signed("demo-key", v1=True), signed("demo-key")
    for policy in NoncePolicy:
        result = verify_actor(v2, "demo-key", SECRET, now, WINDOW, nonce_policy=policy)
        assert isinstance(result, Verified) and result.nonce == v2[SIGNATURE_HEADER].split(",")[1][2:]
    legacy = verify_actor(v1, "demo-key", SECRET, now, WINDOW)
    assert isinstance(legacy, Verified) and legacy.nonce is None  # optional: v1 accepted (window only)
    required = NoncePolicy.REQUIRED
    assert verify_actor(v1, "demo-key", SECRET, now, WINDOW, nonce_policy=required) is ActorProblem.NONCE_REQUIRED
    # An n= beside a v1 signature is not covered by it: it does not make v1 acceptable under `required`.
    with_n = {**v1, SIGNATURE_HEADER: v1[SIGNATURE_HEADER].replace(",v1=", f",n={new_nonce()},v1=")}
    assert verify_actor(with_n, "demo-key", SECRET, now, WINDOW, nonce_policy=required) is ActorProblem.NONCE_REQUIRED


async def test_the_memory_nonce_store_forgets_after_the_ttl() -> None:
    clock = [100.0]
    store = MemoryNonces(clock=lambda: clock[0])
    assert await store.first_use("org", "key", "n" * 22, 10)
    assert not await store.first_use("org", "key", "n" * 22, 10)
    assert await store.first_use("org", "other-key", "n" * 22, 10)  # per key
    clock[0] += 11
    assert await store.first_use("org", "key", "m" * 22, 10)  # this call drops the expired ones
    assert len(store) == 1


def test_replay_window() -> None:
    now = time.time()
    assert isinstance(verify_actor(signed("demo-key", at=now - WINDOW + 5), "demo-key", SECRET, now, WINDOW), Verified)
    assert (
        verify_actor(signed("demo-key", at=now - WINDOW - 5), "demo-key", SECRET, now, WINDOW) is ActorProblem.EXPIRED
    )
    assert (
        verify_actor(signed("demo-key", at=now + WINDOW + 5), "demo-key", SECRET, now, WINDOW) is ActorProblem.EXPIRED
    )


def test_bound_to_the_key_and_the_secret() -> None:
    now = time.time()
    assert verify_actor(signed("other-key"), "demo-key", SECRET, now, WINDOW) is ActorProblem.BAD_SIGNATURE
    assert verify_actor(signed("demo-key"), "demo-key", "another-secret", now, WINDOW) is ActorProblem.BAD_SIGNATURE
    assert verify_actor(signed("demo-key"), "demo-key", None, now, WINDOW) is ActorProblem.NO_SECRET


def test_a_rotation_may_send_two_signatures() -> None:
    now, nonce = int(time.time()), new_nonce()
    old = sign_actor("old-secret", "demo-key", ALICE, now, nonce)
    new = sign_actor(SECRET, "demo-key", ALICE, now, nonce)
    both = {**new, SIGNATURE_HEADER: f"{new[SIGNATURE_HEADER]},{old[SIGNATURE_HEADER].split(',')[2]}"}
    assert isinstance(verify_actor(both, "demo-key", "old-secret", now, WINDOW), Verified)
    assert isinstance(verify_actor(both, "demo-key", SECRET, now, WINDOW), Verified)


def test_parse_actor() -> None:
    assert parse_actor("user=alice;team=ml;app=notebook;env=prod") == {**ALICE, "env": "prod"}
    assert parse_actor("") is None and parse_actor("x" * 2000) is None


# -- through Check, per policy ---------------------------------------------------------------------


def policy(name: str) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        project_of(doc)["actors"] = {"policy": name, "signing_secret": "env:QG_TEST_ACTOR_SECRET"}

    return edit


@pytest.fixture(autouse=True)
def actor_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QG_TEST_ACTOR_SECRET", SECRET)


def tampered(key_id: str) -> dict[str, str]:
    return {**signed(key_id), ACTOR_HEADER: "user=mallory;team=ml;app=notebook"}


def expired(key_id: str) -> dict[str, str]:
    return signed(key_id, at=time.time() - 3600)  # a captured header sent again an hour later


def nonce_policy(name: str, nonce: str) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        project_of(doc)["actors"] = {"policy": name, "signing_secret": "env:QG_TEST_ACTOR_SECRET", "nonce": nonce}

    return edit


async def test_required(gateway: Any) -> None:
    async with gateway(policy("required")) as (rt, cred):
        key = key_of(cred)
        ok_headers = signed(key)
        ok = await rt.gatekeeper.check(chat_request(cred, **ok_headers))
        assert isinstance(ok, Allow)
        assert {k: v for k, v in ok.ticket.tags.items() if k.startswith("actor.")} == {
            "actor.user": "alice",
            "actor.team": "ml",
            "actor.app": "notebook",
        }
        assert ACTOR_HEADER in ok.remove_headers and SIGNATURE_HEADER in ok.remove_headers  # not sent upstream
        cases = {
            "missing": ({}, 401, "actor_required"),
            "unsigned": ({ACTOR_HEADER: "user=alice"}, 401, "actor_required"),
            "tampered": (tampered(key), 403, "actor_signature_invalid"),
            "replayed": (ok_headers, 403, "actor_signature_replayed"),  # the same header a second time
            "expired": (expired(key), 403, "actor_signature_expired"),
            "other key": (signed("someone-else"), 403, "actor_signature_invalid"),
            "malformed": ({ACTOR_HEADER: "who=me", SIGNATURE_HEADER: "t=1,v1=" + "0" * 64}, 403, "actor_malformed"),
        }
        for name, (headers, status, reason) in cases.items():
            out = await rt.gatekeeper.check(chat_request(cred, **headers))
            assert isinstance(out, Deny), name
            assert (out.status, out.reason) == (status, reason), name
        rows = usage_rows(rt)
        assert [r.deny_reason for r in rows if r.decision == "denied"] == [c[2] for c in cases.values()]
        assert all(r.key_id == "demo-key" for r in rows)


async def test_required_without_the_secret_fails_closed(gateway: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with gateway(policy("required")) as (rt, cred):
        monkeypatch.delenv("QG_TEST_ACTOR_SECRET")
        out = await rt.gatekeeper.check(chat_request(cred, **signed(key_of(cred))))
        assert isinstance(out, Deny) and (out.status, out.reason) == (503, "actor_verification_unavailable")


async def test_optional(gateway: Any) -> None:
    async with gateway(policy("optional")) as (rt, cred):
        key = key_of(cred)
        valid = signed(key)
        answers = {
            "valid": await rt.gatekeeper.check(chat_request(cred, **valid)),
            "missing": await rt.gatekeeper.check(chat_request(cred)),
            "unsigned": await rt.gatekeeper.check(chat_request(cred, **{ACTOR_HEADER: "user=alice"})),
            "tampered": await rt.gatekeeper.check(chat_request(cred, **tampered(key))),
            "expired": await rt.gatekeeper.check(chat_request(cred, **expired(key))),
        }
        answers["replayed"] = await rt.gatekeeper.check(chat_request(cred, **valid))
        tags = {}
        for name, out in answers.items():
            assert isinstance(out, Allow), name  # optional never refuses
            tags[name] = {k: v for k, v in out.ticket.tags.items() if k.startswith("actor.")}
        assert tags == {
            "valid": {"actor.user": "alice", "actor.team": "ml", "actor.app": "notebook"},
            "missing": {},
            "unsigned": {"actor.status": "unsigned"},  # ignored and flagged: never attributed to alice
            "tampered": {"actor.status": "bad_signature"},
            "expired": {"actor.status": "expired"},
            "replayed": {"actor.status": "replayed"},  # let through under optional, never attributed
        }


async def test_off_ignores_actor_headers(gateway: Any) -> None:
    async with gateway(policy("off")) as (rt, cred):
        out = await rt.gatekeeper.check(chat_request(cred, **tampered(key_of(cred))))
        assert isinstance(out, Allow)
        assert not any(k.startswith("actor.") for k in out.ticket.tags)
        assert ACTOR_HEADER in out.remove_headers


async def test_usage_events_and_reports_group_by_actor(gateway: Any, use_database: str) -> None:
    async with gateway(policy("required")) as (rt, cred):
        key = key_of(cred)
        for fields in (ALICE, ALICE, {"user": "bob", "team": "ml"}, {"user": "carol", "team": "web"}):
            out = await rt.gatekeeper.check(chat_request(cred, **signed(key, fields)))
            assert isinstance(out, Allow)
            await rt.meter(out.ticket).finish()  # no response: an allowed event all the same
        rows = usage_rows(rt)
        assert rows[0].tags["actor.user"] == "alice" and rows[0].tags["actor.app"] == "notebook"
        with rt.app.db.read() as session:
            by_team = usage_report(session, ReportQuery(group_by=("actor_team", "actor_user")))
            by_app = usage_report(session, ReportQuery(group_by=("actor_app",)))
        assert [(r["actor_team"], r["actor_user"], r["requests"]) for r in by_team.rows] == [
            ("ml", "alice", 2),
            ("ml", "bob", 1),
            ("web", "carol", 1),
        ]
        assert {r["actor_app"]: r["requests"] for r in by_app.rows} == {"-": 2, "notebook": 2}


async def test_required_nonces_refuse_v1(gateway: Any) -> None:
    async with gateway(nonce_policy("required", "required")) as (rt, cred):
        key = key_of(cred)
        out = await rt.gatekeeper.check(chat_request(cred, **signed(key, v1=True)))
        assert isinstance(out, Deny) and (out.status, out.reason) == (403, "actor_nonce_required")
        assert isinstance(await rt.gatekeeper.check(chat_request(cred, **signed(key))), Allow)


async def test_v1_is_accepted_by_default_and_protected_by_the_window_only(gateway: Any) -> None:
    async with gateway(policy("required")) as (rt, cred):  # nonce: optional (the default)
        v1 = signed(key_of(cred), v1=True)
        assert isinstance(await rt.gatekeeper.check(chat_request(cred, **v1)), Allow)
        # Without a nonce, the window is the only protection: the same v1 header is accepted again.
        assert isinstance(await rt.gatekeeper.check(chat_request(cred, **v1)), Allow)


@pytest.mark.redis
async def test_a_replay_to_another_gateway_process_is_refused(gateway: Any) -> None:
    """Two gateway processes sharing Redis (as scale-out runs): a header accepted by one is refused by the
    other. Each runtime has its own Redis connection pool and nonce store object."""
    from quotagate.store.nonces_redis import RedisNonces
    from tests.support.gateway import running_runtime
    from tests.support.servers import RUN_ID, delete_redis_prefix, redis_url, unavailable

    url, prefix = redis_url(), f"qgt-nonce-{RUN_ID}-{new_nonce()[:6]}"
    probe = RedisNonces(url, prefix=prefix, timeout_ms=2000)
    try:
        await probe.first_use("org", "key", new_nonce(), 1)
    except Exception as exc:
        unavailable("Redis", url, exc)
    finally:
        await probe.close()
    try:
        shared = {"redis_url": url, "redis_prefix": prefix, "redis_timeout_ms": 3000}
        async with gateway(policy("required"), **shared) as (first, cred), running_runtime(**shared) as second:
            assert isinstance(first.nonces, RedisNonces) and first.nonces is not second.nonces
            headers = signed(key_of(cred))
            assert isinstance(await first.gatekeeper.check(chat_request(cred, **headers)), Allow)
            out = await second.gatekeeper.check(chat_request(cred, **headers))
            assert isinstance(out, Deny) and (out.status, out.reason) == (403, "actor_signature_replayed")
            fresh = signed(key_of(cred))
            assert isinstance(await second.gatekeeper.check(chat_request(cred, **fresh)), Allow)
    finally:
        delete_redis_prefix(url, prefix)


async def test_required_fails_closed_when_the_nonce_store_is_down(gateway: Any) -> None:
    closed = "redis://127.0.0.1:9/0"  # nothing listens: every nonce claim fails
    async with gateway(policy("required"), redis_url=closed, redis_timeout_ms=300) as (rt, cred):
        out = await rt.gatekeeper.check(chat_request(cred, **signed(key_of(cred))))
        assert isinstance(out, Deny) and (out.status, out.reason) == (503, "actor_verification_unavailable")
