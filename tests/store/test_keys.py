"""Gateway keys end to end through the CLI and the core authenticator, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from quotagate.app import open_app
from quotagate.cli.main import main
from quotagate.identity.authenticate import AuthFailure, Identity, authenticate
from quotagate.identity.credentials import Credential, SecretHasher, parse_credential
from quotagate.store import keys_repo
from quotagate.store.snapshot_loader import load_snapshot
from tests.conftest import EXAMPLES

KEY = "da-sk-acme-team"


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture
def applied(use_database: str) -> str:
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.json")]) == 0
    return use_database


def issue(capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    capsys.readouterr()
    assert run(["keys", "issue", KEY, "--json", *extra]) == 0
    return str(json.loads(capsys.readouterr().out)["credential"])


def check(raw: str, when: datetime | None = None) -> Identity | AuthFailure:
    app = open_app()
    with app.db.read() as session:
        snapshot = load_snapshot(session)
    app.close()
    return authenticate(snapshot, app.hasher, parse_credential(raw), when or datetime.now(UTC))


def test_issued_credential_verifies(applied: str, capsys: pytest.CaptureFixture[str]) -> None:
    raw = issue(capsys)
    key_id, _, secret = raw.partition(".")
    assert key_id == KEY and len(secret) >= 43  # 32 random bytes, urlsafe base64
    outcome = check(raw)
    assert isinstance(outcome, Identity)
    assert (outcome.org.slug, outcome.project.slug, outcome.key.key_id) == ("acme", "team-ai", KEY)


def test_keys_from_a_manifest_have_no_secret_until_issued(applied: str) -> None:
    assert check(f"{KEY}.{'A' * 43}") is AuthFailure.INVALID_CREDENTIAL


def test_unknown_id_and_wrong_secret_are_the_same_failure(applied: str, capsys: pytest.CaptureFixture[str]) -> None:
    raw = issue(capsys)
    wrong = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    assert check(wrong) is AuthFailure.INVALID_CREDENTIAL
    assert check("nobody-here." + raw.partition(".")[2]) is AuthFailure.INVALID_CREDENTIAL
    assert AuthFailure.INVALID_CREDENTIAL.status == 401


@pytest.mark.parametrize(
    ("verb", "reason"), [("suspend", AuthFailure.KEY_SUSPENDED), ("revoke", AuthFailure.KEY_REVOKED)]
)
def test_suspended_and_revoked_keys_are_refused(
    verb: str, reason: AuthFailure, applied: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = issue(capsys)
    assert run(["keys", verb, KEY]) == 0
    assert check(raw) is reason
    assert reason.status == 403


def test_resume_restores_a_suspended_key_but_revocation_is_final(
    applied: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = issue(capsys)
    assert run(["keys", "suspend", KEY]) == 0
    assert run(["keys", "resume", KEY]) == 0
    assert isinstance(check(raw), Identity)
    assert run(["keys", "revoke", KEY]) == 0
    assert run(["keys", "resume", KEY]) == 2
    assert run(["keys", "issue", KEY]) == 2
    # Re-applying the manifest (which says active) does not un-revoke.
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.json")]) == 0
    assert check(raw) is AuthFailure.KEY_REVOKED


def test_expired_key_is_refused(applied: str, capsys: pytest.CaptureFixture[str]) -> None:
    raw = issue(capsys, "--expires", "1h")
    assert isinstance(check(raw), Identity)
    assert check(raw, datetime.now(UTC) + timedelta(hours=2)) is AuthFailure.KEY_EXPIRED


def test_rotation_keeps_the_old_secret_for_the_grace_period(applied: str, capsys: pytest.CaptureFixture[str]) -> None:
    old = issue(capsys)
    assert run(["keys", "rotate", KEY, "--grace", "1h", "--json"]) == 0
    new = json.loads(capsys.readouterr().out)["credential"]
    assert new != old
    assert isinstance(check(new), Identity)
    assert isinstance(check(old), Identity)
    later = datetime.now(UTC) + timedelta(hours=1, seconds=1)
    assert check(old, later) is AuthFailure.INVALID_CREDENTIAL
    assert isinstance(check(new, later), Identity)


def test_disabled_organization_refuses_its_keys(applied: str, capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    raw = issue(capsys)
    text = (
        (EXAMPLES / "acme-team.yaml")
        .read_text()
        .replace("    status: active\n    runtime", "    status: disabled\n    runtime")
    )
    path = tmp_path / "disabled.yaml"
    path.write_text(text)
    assert run(["manifest", "apply", str(path)]) == 0
    assert check(raw) is AuthFailure.ORGANIZATION_DISABLED


def test_list_never_shows_secrets(applied: str, capsys: pytest.CaptureFixture[str]) -> None:
    raw = issue(capsys)
    secret = raw.partition(".")[2]
    assert run(["keys", "list", "--json"]) == 0
    out = capsys.readouterr().out
    assert secret not in out
    listed = json.loads(out)
    assert listed[0]["key_id"] == KEY and listed[0]["issued"] is True and listed[0]["status"] == "active"
    assert run(["keys", "list"]) == 0
    assert secret not in capsys.readouterr().out


def test_only_a_hash_is_stored(applied: str, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.store.test_manifest_apply import dump_db

    raw = issue(capsys)
    assert raw.partition(".")[2] not in repr(dump_db(applied))


def test_hash_is_bound_to_the_key_id_and_pepper() -> None:
    plain, peppered = SecretHasher(), SecretHasher(b"pepper")
    assert plain.hash("a-key", "s" * 43) != plain.hash("b-key", "s" * 43)
    assert plain.hash("a-key", "s" * 43) != peppered.hash("a-key", "s" * 43)
    assert plain.matches("a-key", "s" * 43, plain.hash("a-key", "s" * 43))
    assert not plain.matches("a-key", "s" * 43, None)


def test_repo_refuses_expiry_in_the_past(applied: str) -> None:
    app = open_app()
    from quotagate.errors import ConfigError

    with pytest.raises(ConfigError), app.db.transaction() as session:
        keys_repo.issue_key(session, app.hasher, KEY, actor="t", expires_at=datetime.now(UTC) - timedelta(1))
    app.close()
    assert repr(Credential(KEY, "secret-value-xyz")).count("secret-value-xyz") == 0
