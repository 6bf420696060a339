"""`manifest apply` on SQLite and PostgreSQL: transactional, idempotent, disables instead of deleting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from quotagate.cli.main import main
from quotagate.store import tables as t
from quotagate.store.database import Database
from tests.conftest import EXAMPLES


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def dump_db(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, to compare the whole database before and after."""
    db = Database(url)
    out: dict[str, list[dict[str, Any]]] = {}
    with db.read() as session:
        for table in t.Base.metadata.sorted_tables:
            rows = session.execute(select(table)).mappings().all()
            out[table.name] = sorted((dict(r) for r in rows), key=repr)
    db.close()
    return out


@pytest.mark.parametrize("name", ["acme-team.json", "acme-team.yaml"])
def test_apply_seed_then_again_reports_no_changes(
    name: str, use_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["manifest", "apply", "--json", str(EXAMPLES / name)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["applied"] is True
    created = {(c["kind"], c["id"]) for c in first["changes"] if c["action"] == "create"}
    assert ("gateway_key", "da-sk-acme-team") in created
    assert ("rate_card", "openai-standard-2026-06-07") in created
    assert sum(1 for kind, _ in created if kind == "quota") == 3

    before = dump_db(use_database)
    assert run(["manifest", "apply", str(EXAMPLES / name)]) == 0
    assert "No changes" in capsys.readouterr().out
    assert dump_db(use_database) == before

    # The other format of the same document is also a no-op.
    other = "acme-team.yaml" if name.endswith(".json") else "acme-team.json"
    assert run(["manifest", "apply", str(EXAMPLES / other)]) == 0
    assert "No changes" in capsys.readouterr().out


def test_plan_changes_nothing(use_database: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = dump_db(use_database)
    assert run(["manifest", "plan", str(EXAMPLES / "acme-team.yaml")]) == 0
    out = capsys.readouterr().out
    assert "+ gateway_key da-sk-acme-team" in out
    assert "Plan: 11 to create" in out
    assert dump_db(use_database) == before


BAD = Path(__file__).parent.parent / "manifest" / "bad"


@pytest.mark.parametrize("bad", ["duplicate-key-id.yaml", "quota-unknown-project.yaml", "negative-price.yaml"])
def test_invalid_manifest_changes_nothing(bad: str, use_database: str) -> None:
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    before = dump_db(use_database)
    assert run(["manifest", "apply", str(BAD / bad)]) == 2
    assert dump_db(use_database) == before


def _edited(tmp_path: Path, edit: Any) -> Path:
    doc = yaml.safe_load((EXAMPLES / "acme-team.yaml").read_text())
    edit(doc)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_removed_entities_are_disabled_not_deleted(
    use_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0

    def drop_key_and_quota(doc: dict[str, Any]) -> None:
        org = doc["organizations"][0]
        org["quotas"].pop(2)
        org["projects"][0]["clients"][0]["api_keys"] = []

    capsys.readouterr()
    assert run(["manifest", "apply", str(_edited(tmp_path, drop_key_and_quota))]) == 0
    out = capsys.readouterr().out
    assert "- gateway_key da-sk-acme-team (not in the manifest)" in out
    db = Database(use_database)
    with db.read() as session:
        key = session.get(t.GatewayKey, "da-sk-acme-team")
        assert key is not None and key.status == "disabled"
        statuses = sorted(q.status for q in session.scalars(select(t.Quota)))
        assert statuses == ["active", "active", "disabled"]
    db.close()
    # Putting them back re-enables them.
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    with Database(use_database).read() as session:
        key = session.get(t.GatewayKey, "da-sk-acme-team")
        assert key is not None and key.status == "active"


def test_changed_limit_is_an_update(use_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    capsys.readouterr()
    path = _edited(tmp_path, lambda d: d["organizations"][0]["quotas"][1].__setitem__("rpm_limit", 300))
    assert run(["manifest", "apply", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rpm_limit: 260 -> 300" in out
    assert "Applied: 0 to create, 1 to change, 0 to disable." in out


def test_rate_card_versions_are_immutable(
    use_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    before = dump_db(use_database)

    def cheaper(doc: dict[str, Any]) -> None:
        doc["deployment"]["enabled_features"][3]["config"]["rates"][0]["input"] = 0.5

    assert run(["manifest", "apply", str(_edited(tmp_path, cheaper))]) == 2
    assert "rate cards are immutable" in capsys.readouterr().err
    assert dump_db(use_database) == before

    def new_version(doc: dict[str, Any]) -> None:
        cheaper(doc)
        doc["deployment"]["enabled_features"][3]["config"]["rate_card_version"] = "openai-2026-12"

    assert run(["manifest", "apply", str(_edited(tmp_path, new_version))]) == 0
    with Database(use_database).read() as session:
        versions = sorted(session.scalars(select(t.RateCard.version)))
        assert versions == ["openai-2026-12", "openai-standard-2026-06-07"]
        assert session.get(t.ConfigState, 1).active_rate_card == "openai-2026-12"  # type: ignore[union-attr]


def test_every_change_is_an_audit_event(use_database: str) -> None:
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    with Database(use_database).read() as session:
        events = list(session.scalars(select(t.AdminAuditEvent)))
    assert len(events) == 13
    assert all(e.actor.startswith("cli:") for e in events)
    assert {e.action for e in events} == {"manifest.create", "manifest.update"}
