"""`manifest apply` on SQLite and PostgreSQL: transactional, idempotent, disables instead of deleting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from quotagate.store import tables as t
from quotagate.store import tenancy_repo
from quotagate.store.database import Database
from tests.conftest import EXAMPLES
from tests.manifest.test_bad_manifests import BAD, expected_error
from tests.support.cli import run
from tests.support.pg import PgDatabases


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


BAD_CASES = sorted(BAD.iterdir())


def _apply_bad(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`manifest apply` of a bad fixture exits 2 with exactly its one expected error."""
    capsys.readouterr()
    assert run(["manifest", "apply", str(path)]) == 2
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", f"{path}: 1 error(s)\n  {expected_error(path)}\n")


@pytest.mark.parametrize("bad", BAD_CASES, ids=[p.name for p in BAD_CASES])
def test_every_bad_manifest_fails_with_its_error_and_changes_nothing(
    bad: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    monkeypatch.setenv("QUOTAGATE_DATABASE_URL", url)
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    before = dump_db(url)
    _apply_bad(bad, capsys)
    assert dump_db(url) == before


@pytest.mark.postgres
def test_bad_manifests_change_nothing_on_postgresql(
    pg_databases: PgDatabases, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_databases.new_database()
    monkeypatch.setenv("QUOTAGATE_DATABASE_URL", url)
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    before = dump_db(url)
    for bad in BAD_CASES:
        _apply_bad(bad, capsys)
    assert dump_db(url) == before


def _conflict(path: Path, use_database: str, capsys: pytest.CaptureFixture[str], *problems: str) -> None:
    """Applying `path` exits 2 listing exactly `problems` (path: message), and changes nothing."""
    before = dump_db(use_database)
    capsys.readouterr()
    assert run(["manifest", "apply", str(path)]) == 2
    lines = "".join(f"  {p}\n" for p in problems)
    heading = f"{path}: the manifest conflicts with the database: {len(problems)} error(s)\n"
    assert capsys.readouterr().err == heading + lines
    assert run(["manifest", "plan", str(path)]) == 2
    assert dump_db(use_database) == before


ORG = "10000000-0000-0000-0000-000000000001"
PROJECT = "10000000-0000-0000-0001-000000000001"


def test_a_slug_held_by_another_organization_is_a_path_precise_error(
    use_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    # A new organization id with the old one's slug: the old row (disabled, not deleted) keeps the slug.
    path = _edited(tmp_path, lambda d: d["organizations"][0].__setitem__("organization_id", "org-new-acme"))
    _conflict(
        path,
        use_database,
        capsys,
        f"organizations[0].organization_slug: slug 'acme' is already used by organization '{ORG}' in the database",
    )


def test_rows_created_through_the_admin_api_are_not_taken_over(
    use_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = Database(use_database)
    with db.transaction() as session:
        values = {"organization_id": "org-api", "organization_slug": "from-api", "organization_name": "API"}
        tenancy_repo.create(session, tenancy_repo.ORGANIZATION, {**values, "status": "active"}, None, actor="t")
        project = {"project_id": "proj-api", "organization_id": "org-api", "project_slug": "p", "project_name": "P"}
        tenancy_repo.create(session, tenancy_repo.PROJECT, {**project, "status": "active"}, None, actor="t")
    db.close()

    def reuse_api_ids(doc: dict[str, Any]) -> None:
        org = doc["organizations"][0]
        org["organization_id"] = "org-api"
        org["organization_slug"] = "from-api"
        for quota in org["quotas"]:
            quota["project_id"] = "proj-api"
        org["projects"][0]["project_id"] = "proj-api"

    _conflict(
        _edited(tmp_path, reuse_api_ids),
        use_database,
        capsys,
        "organizations[0].organization_id: organization 'org-api' already exists, created through the admin API; "
        "a manifest cannot take it over: use another id",
        "organizations[0].projects[0].project_id: project 'proj-api' already exists, created through the admin API; "
        "a manifest cannot take it over: use another id",
    )


def test_a_project_slug_held_by_another_project_of_the_organization(
    use_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    db = Database(use_database)
    with db.transaction() as session:
        project = {"project_id": "proj-api", "organization_id": ORG, "project_slug": "research", "project_name": "R"}
        tenancy_repo.create(session, tenancy_repo.PROJECT, {**project, "status": "active"}, None, actor="t")
    db.close()
    path = _edited(tmp_path, lambda d: d["organizations"][0]["projects"][0].__setitem__("project_slug", "research"))
    _conflict(
        path,
        use_database,
        capsys,
        "organizations[0].projects[0].project_slug: slug 'research' is already used by project 'proj-api' of this "
        "organization in the database",
    )


def test_a_clash_found_only_while_writing_is_a_clear_error_and_changes_nothing(
    use_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two organizations swapping slugs in one apply: the database refuses the first update; exit 2, no traceback."""

    def two_orgs(doc: dict[str, Any]) -> None:
        second = yaml.safe_load(yaml.safe_dump(doc["organizations"][0]))
        second.update(organization_id="org-two", organization_slug="two", quotas=[], projects=[])
        doc["organizations"].append(second)

    assert run(["manifest", "apply", str(_edited(tmp_path, two_orgs))]) == 0
    before = dump_db(use_database)

    def swapped(doc: dict[str, Any]) -> None:
        two_orgs(doc)
        doc["organizations"][0]["organization_slug"], doc["organizations"][1]["organization_slug"] = "two", "acme"

    capsys.readouterr()
    assert run(["manifest", "apply", str(_edited(tmp_path, swapped))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("quotagate: error: the manifest clashes with rows in the database (")
    assert err.rstrip().endswith("); nothing was changed") and "Traceback" not in err
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
