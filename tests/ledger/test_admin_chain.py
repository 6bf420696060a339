"""Admin actions are ledger entries: in the same transaction, on the organization's or the global chain."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from quotagate.ledger.chain import GLOBAL_CHAIN
from quotagate.ledger.checkpoint import KeyRing
from quotagate.secret_box import new_master_key
from quotagate.store.audit import record_admin_action
from quotagate.store.database import Database
from quotagate.store.ledger_audit import chain_orgs, verify_org
from quotagate.store.tables import AdminAuditEvent, LedgerEntry
from tests.conftest import EXAMPLES
from tests.support.cli import run


def entries(db: Database, org: str) -> list[LedgerEntry]:
    with db.read() as session:
        return list(
            session.scalars(select(LedgerEntry).where(LedgerEntry.organization_id == org).order_by(LedgerEntry.seq))
        )


def test_an_admin_action_is_an_entry_of_its_organization_chain(database_url: str) -> None:
    db = Database(database_url)
    with db.transaction() as session:
        event = record_admin_action(
            session,
            actor="api:ops",
            action="quota.update",
            target_type="quota",
            target_id="q1",
            organization_id="acme",
            before={"monthly_spend_nanos": 10**18},  # beyond I-JSON: kept exact as a string
            after={"monthly_spend_nanos": 2 * 10**18, "rpm": 60},
        )
    [entry] = entries(db, "acme")
    assert (entry.seq, entry.kind, entry.ref, entry.amount_nanos) == (1, "admin", f"audit:{event.id}", 0)
    assert entry.recorded_at == event.at
    assert json.loads(entry.body)["data"] == {
        "actor": "api:ops",
        "action": "quota.update",
        "target_type": "quota",
        "target_id": "q1",
        "before": {"monthly_spend_nanos": str(10**18)},
        "after": {"monthly_spend_nanos": str(2 * 10**18), "rpm": 60},
    }
    db.close()


def test_actions_without_an_organization_go_to_the_global_chain(database_url: str) -> None:
    db = Database(database_url)
    with db.transaction() as session:
        record_admin_action(
            session, actor="cli:x", action="upstream.set_key", target_type="provider_credential", target_id="openai"
        )
    assert [e.kind for e in entries(db, GLOBAL_CHAIN)] == ["admin"]
    db.close()


def test_a_rolled_back_action_leaves_no_entry(database_url: str) -> None:
    db = Database(database_url)

    def fail() -> None:
        with db.transaction() as session:
            record_admin_action(session, actor="a", action="b", target_type="c", target_id=None, organization_id="acme")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fail()
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(LedgerEntry)) == 0
        assert session.scalar(select(func.count()).select_from(AdminAuditEvent)) == 0
    db.close()


def test_sqlite_appends_refuse_a_deferred_transaction(tmp_path: object) -> None:
    db = Database(f"sqlite:///{tmp_path}/x.db")
    with pytest.raises(RuntimeError, match="IMMEDIATE"), db.transaction(immediate=False) as session:
        record_admin_action(session, actor="a", action="b", target_type="c", target_id=None, organization_id="acme")
    db.close()


def test_cli_admin_commands_extend_the_chains(use_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_KEY_FOR_TEST", "sk-test")
    monkeypatch.setenv("QUOTAGATE_MASTER_KEY", new_master_key())  # PostgreSQL has no embedded one
    assert run(["manifest", "apply", str(EXAMPLES / "acme-team.yaml")]) == 0
    assert run(["keys", "issue", "da-sk-acme-team"]) == 0
    assert run(["keys", "suspend", "da-sk-acme-team"]) == 0
    assert run(["upstream", "set-key", "openai", "--from-env", "OPENAI_KEY_FOR_TEST"]) == 0
    db = Database(use_database)
    with db.read() as session:
        orgs = chain_orgs(session)
        assert GLOBAL_CHAIN in orgs
        [org] = [o for o in orgs if o != GLOBAL_CHAIN]
        actions = [json.loads(e.body)["data"]["action"] for e in entries(db, org)]
        assert actions[-2:] == ["key.issue", "key.suspend"]
        assert "manifest.create" in actions
        global_actions = [json.loads(e.body)["data"]["action"] for e in entries(db, GLOBAL_CHAIN)]
        assert global_actions[-1] == "upstream.set_key"  # a provider key belongs to no organization
        for chain in orgs:
            report = verify_org(session, chain, KeyRing([]))
            assert report.ok, report.summary()
        events = session.scalar(select(func.count()).select_from(AdminAuditEvent))
        admin_entries = session.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "admin"))
        assert events == admin_entries
    db.close()
