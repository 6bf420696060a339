"""Signed actor identity: the signature format, and each policy's answer to valid, tampered, replayed
(expired) and missing signatures, with the verified actor on usage events and in reports."""

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
    Verified,
    parse_actor,
    sign_actor,
    verify_actor,
)
from quotagate.store.reports import ReportQuery, usage_report
from tests.governance.conftest import project_of, usage_rows
from tests.support.gateway import chat_request

SECRET = "workspace-signing-secret-0123456789"
ALICE = {"user": "alice", "team": "ml", "app": "notebook"}
WINDOW = 300


def signed(key_id: str, fields: dict[str, str] = ALICE, *, at: float | None = None) -> dict[str, str]:
    return sign_actor(SECRET, key_id, fields, int(time.time() if at is None else at))


def key_of(credential: str) -> str:
    return credential.partition(".")[0]


# -- the format ------------------------------------------------------------------------------------


def test_the_documented_canonical_string() -> None:
    """HMAC-SHA-256(secret, "v1\\n<t>\\n<key id>\\n<fields sorted by name>") in lower-case hex."""
    import hashlib
    import hmac

    headers = sign_actor("s3cret", "demo-key", {"user": "alice", "app": "nb", "team": "ml"}, 1767225600)
    assert headers[ACTOR_HEADER] == "app=nb;team=ml;user=alice"
    message = b"v1\n1767225600\ndemo-key\napp=nb;team=ml;user=alice"
    digest = hmac.new(b"s3cret", message, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"t=1767225600,v1={digest}"


def test_field_order_and_spacing_do_not_matter() -> None:
    headers = signed("demo-key")
    headers[ACTOR_HEADER] = " team=ml ; user=alice;app=notebook "
    assert isinstance(verify_actor(headers, "demo-key", SECRET, time.time(), WINDOW), Verified)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda h: h.pop(ACTOR_HEADER), ActorProblem.MISSING),
        (lambda h: h.pop(SIGNATURE_HEADER), ActorProblem.UNSIGNED),
        (lambda h: h.update({ACTOR_HEADER: "user=mallory;team=ml;app=notebook"}), ActorProblem.BAD_SIGNATURE),
        (lambda h: h.update({ACTOR_HEADER: "user=alice;team=ml"}), ActorProblem.BAD_SIGNATURE),  # field dropped
        (lambda h: h.update({SIGNATURE_HEADER: h[SIGNATURE_HEADER][:-1] + "0"}), ActorProblem.BAD_SIGNATURE),
        (lambda h: h.update({SIGNATURE_HEADER: "v1=abc"}), ActorProblem.MALFORMED),
        (lambda h: h.update({ACTOR_HEADER: "user=alice;role=admin"}), ActorProblem.MALFORMED),  # unknown field
        (lambda h: h.update({ACTOR_HEADER: "user=al ice"}), ActorProblem.MALFORMED),
        (lambda h: h.update({ACTOR_HEADER: "user=a;user=b"}), ActorProblem.MALFORMED),
    ],
)
def test_problems(mutate: Callable[[dict[str, str]], Any], problem: ActorProblem) -> None:
    headers = signed("demo-key")
    mutate(headers)
    assert verify_actor(headers, "demo-key", SECRET, time.time(), WINDOW) is problem


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
    old = sign_actor("old-secret", "demo-key", ALICE, int(time.time()))
    new = signed("demo-key")
    both = {**new, SIGNATURE_HEADER: f"{new[SIGNATURE_HEADER]},{old[SIGNATURE_HEADER].split(',')[1]}"}
    assert isinstance(verify_actor(both, "demo-key", "old-secret", time.time(), WINDOW), Verified)
    assert isinstance(verify_actor(both, "demo-key", SECRET, time.time(), WINDOW), Verified)


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
    return signed(key_id, at=time.time() - 3600)  # a captured header replayed an hour later


async def test_required(gateway: Any) -> None:
    async with gateway(policy("required")) as (rt, cred):
        key = key_of(cred)
        ok = await rt.gatekeeper.check(chat_request(cred, **signed(key)))
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
            "replayed": (expired(key), 403, "actor_signature_expired"),
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
        answers = {
            "valid": await rt.gatekeeper.check(chat_request(cred, **signed(key))),
            "missing": await rt.gatekeeper.check(chat_request(cred)),
            "unsigned": await rt.gatekeeper.check(chat_request(cred, **{ACTOR_HEADER: "user=alice"})),
            "tampered": await rt.gatekeeper.check(chat_request(cred, **tampered(key))),
            "replayed": await rt.gatekeeper.check(chat_request(cred, **expired(key))),
        }
        tags = {}
        for name, out in answers.items():
            assert isinstance(out, Allow), name  # optional never refuses
            tags[name] = {k: v for k, v in out.ticket.tags.items() if k.startswith("actor.")}
        assert tags == {
            "valid": {"actor.user": "alice", "actor.team": "ml", "actor.app": "notebook"},
            "missing": {},
            "unsigned": {"actor.status": "unsigned"},  # ignored and flagged: never attributed to alice
            "tampered": {"actor.status": "bad_signature"},
            "replayed": {"actor.status": "expired"},
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
