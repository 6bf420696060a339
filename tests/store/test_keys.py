"""Gateway keys end to end through the CLI and the core authenticator, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from quotagate.app import open_app
from quotagate.identity.authenticate import AuthFailure, Identity, authenticate
from quotagate.identity.credentials import Credential, SecretHasher, parse_credential
from quotagate.store import keys_repo
from quotagate.store.database import Database
from quotagate.store.snapshot_loader import load_snapshot
from quotagate.store.tables import GatewayKey
from tests.conftest import EXAMPLES
from tests.store.test_manifest_apply import dump_db
from tests.support.cli import run

KEY = "da-sk-acme-team"


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


def _manifest_with_key(tmp_path: Path, name: str, **fields: object) -> Path:
    """The seed manifest with `fields` set on its key."""
    doc = yaml.safe_load((EXAMPLES / "acme-team.yaml").read_text())
    key = doc["organizations"][0]["projects"][0]["clients"][0]["api_keys"][0]
    for field, value in fields.items():
        if value is None:
            key.pop(field, None)
        else:
            key[field] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _stored_key(url: str) -> GatewayKey:
    db = Database(url)
    with db.read() as session:
        key = session.get_one(GatewayKey, KEY)
        session.expunge(key)
    db.close()
    return key


def test_reapplying_keeps_a_suspension_and_an_expiry_set_through_the_cli(
    applied: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = issue(capsys, "--expires", "1h")
    assert run(["keys", "suspend", KEY]) == 0
    expires = _stored_key(applied).expires_at
    assert expires is not None
    before = dump_db(applied)
    capsys.readouterr()
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.json")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "No changes. Kept as changed outside the manifest:",
        f"! gateway_key {KEY} (suspended outside the manifest: `quotagate keys resume {KEY}` re-enables it)",
    ]
    assert dump_db(applied) == before
    assert check(raw) is AuthFailure.KEY_SUSPENDED
    assert run(["keys", "resume", KEY]) == 0
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.json")]) == 0
    assert "No changes. The database matches the manifest." in capsys.readouterr().out
    assert isinstance(check(raw), Identity)
    assert _stored_key(applied).expires_at == expires
    assert check(raw, expires + timedelta(seconds=1)) is AuthFailure.KEY_EXPIRED


def test_the_manifest_lifts_only_its_own_suspension(
    applied: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = issue(capsys)
    suspended = _manifest_with_key(tmp_path, "suspended.yaml", status="suspended")
    assert run(["manifest", "apply", str(suspended)]) == 0
    assert check(raw) is AuthFailure.KEY_SUSPENDED
    capsys.readouterr()
    assert run(["keys", "resume", KEY]) == 2  # the manifest's suspension is the manifest's to lift
    assert "is suspended by the manifest: set its status to active there" in capsys.readouterr().err
    assert check(raw) is AuthFailure.KEY_SUSPENDED
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    assert isinstance(check(raw), Identity)
    # The manifest can always make a key stricter, even over a resume done through the CLI.
    assert run(["keys", "suspend", KEY]) == 0
    assert run(["keys", "resume", KEY]) == 0
    assert run(["manifest", "apply", str(suspended)]) == 0
    assert check(raw) is AuthFailure.KEY_SUSPENDED


def test_an_expiry_in_the_manifest_is_the_manifests(
    applied: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    declared = datetime(2031, 1, 31, tzinfo=UTC)
    with_expiry = _manifest_with_key(tmp_path, "expiring.yaml", expires_at="2031-01-31T00:00:00Z")
    assert run(["manifest", "apply", str(with_expiry)]) == 0
    assert _stored_key(applied).expires_at == declared
    issue(capsys, "--expires", "1h")
    assert _stored_key(applied).expires_at != declared
    capsys.readouterr()
    assert run(["manifest", "apply", str(with_expiry)]) == 0  # the manifest sets one: the manifest's wins
    assert "expires_at:" in capsys.readouterr().out
    assert _stored_key(applied).expires_at == declared
    # The manifest dropping its own expiry clears it (one set with `keys issue --expires` would stay).
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    assert _stored_key(applied).expires_at is None


def test_a_revoked_key_left_out_of_the_manifest_stays_revoked(
    applied: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = issue(capsys)
    assert run(["keys", "revoke", KEY]) == 0
    doc = yaml.safe_load((EXAMPLES / "acme-team.yaml").read_text())
    doc["organizations"][0]["projects"][0]["clients"][0]["api_keys"] = []
    without = tmp_path / "without.yaml"
    without.write_text(yaml.safe_dump(doc, sort_keys=False))
    capsys.readouterr()
    assert run(["manifest", "apply", str(without)]) == 0
    assert f"gateway_key {KEY}" not in capsys.readouterr().out  # revoked is already stronger than disabled
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    assert _stored_key(applied).status == "revoked"
    assert check(raw) is AuthFailure.KEY_REVOKED


def test_issue_does_not_silently_replace_a_live_secret(applied: str, capsys: pytest.CaptureFixture[str]) -> None:
    old = issue(capsys)
    before = dump_db(applied)
    assert run(["keys", "issue", KEY]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert f"key '{KEY}' already has a secret: `quotagate keys rotate {KEY}`" in out.err
    assert f"`quotagate keys issue {KEY} --replace`" in out.err
    assert dump_db(applied) == before
    assert isinstance(check(old), Identity)
    new = issue(capsys, "--replace")
    assert new != old
    assert isinstance(check(new), Identity)
    assert check(old) is AuthFailure.INVALID_CREDENTIAL  # replaced at once, unlike `keys rotate`
