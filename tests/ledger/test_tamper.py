"""Every kind of tampering with a stored chain is detected, named and located, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import update

from quotagate.store.database import Database
from quotagate.store.tables import LedgerCheckpoint
from tests.ledger import chains as c
from tests.ledger.chains import ORG

K = 7  # a usage entry in the middle of the chain


@dataclass
class Ledger:
    db: Database
    signer: c.Signer
    head: int


@pytest.fixture
def ledger(database_url: str) -> Ledger:
    db = Database(database_url)
    head = c.build_chain(db)
    signer = c.new_signer()
    c.store_checkpoint(db, signer, 10, c.row(db, 10).hash)
    c.store_checkpoint(db, signer, head, c.row(db, head).hash)
    yield Ledger(db, signer, head)
    db.close()


def test_an_untouched_chain_verifies(ledger: Ledger) -> None:
    report = c.verify(ledger.db, ledger.signer)
    assert report.ok, report.summary()
    assert (report.entries, report.head_seq, report.checkpoints_matched) == (ledger.head, ledger.head, 2)
    assert report.head_hash == c.row(ledger.db, ledger.head).hash
    assert ledger.head == 21  # 4 x 5 usage entries and one admin entry


def edit_body(old: str, new: str) -> Callable[[Ledger], None]:
    def tamper(ledger: Ledger) -> None:
        body = c.row(ledger.db, K).body
        assert old in body
        c.set_columns(ledger.db, K, body=body.replace(old, new, 1))

    return tamper


def edit_column(**values: object) -> Callable[[Ledger], None]:
    return lambda ledger: c.set_columns(ledger.db, K, **values)


def shift_recorded_at(ledger: Ledger) -> None:
    c.set_columns(ledger.db, K, recorded_at=c.row(ledger.db, K).recorded_at + timedelta(seconds=1))


def delete_renumbered(ledger: Ledger) -> None:
    c.delete_seqs(ledger.db, K)
    c.renumber(ledger.db, K + 1, ledger.head, -1)


def insert_sealed(ledger: Ledger) -> None:
    c.renumber(ledger.db, K, ledger.head, +1)
    c.insert_sealed(ledger.db, K, c.row(ledger.db, K - 1).hash, c.NewEntry("credit", "forged", 10**12, {}))


def insert_unsealed(ledger: Ledger) -> None:
    c.renumber(ledger.db, K, ledger.head, +1)
    c.insert_sealed(ledger.db, K, "ab" * 32, c.NewEntry("credit", "forged", 10**12, {}))


def swap(a: int, b: int) -> Callable[[Ledger], None]:
    def tamper(ledger: Ledger) -> None:
        c.set_columns(ledger.db, a, seq=-1)
        c.set_columns(ledger.db, b, seq=a)
        c.set_columns(ledger.db, -1, seq=b)

    return tamper


def rewrite_from(seq: Callable[[Ledger], int]) -> Callable[[Ledger], None]:
    def tamper(ledger: Ledger) -> None:
        at = seq(ledger)
        body = c.row(ledger.db, at).body
        c.set_columns(ledger.db, at, body=body.replace('"output":20', '"output":2', 1))
        c.reseal_from(ledger.db, at)

    return tamper


def reseal_one(ledger: Ledger) -> None:
    edit_body('"output":20', '"output":21')(ledger)
    entry = c.row(ledger.db, K)
    c.set_columns(ledger.db, K, hash=c.link_hash(entry.prev_hash, entry.body.encode()))


CASES: dict[str, tuple[Callable[[Ledger], None], list[tuple[str, int | None]]]] = {
    "cost digit in a body": (edit_body('"output":"0.000012"', '"output":"0.000013"'), [("edited", K)]),
    "amount digit in a body": (edit_body('"amount_nanos":-1850006', '"amount_nanos":-1850007'), [("edited", K)]),
    "edit a body and recompute its hash": (reseal_one, [("edited", K)]),
    "amount column": (edit_column(amount_nanos=-1), [("column-edited", K)]),
    "kind column": (edit_column(kind="credit"), [("column-edited", K)]),
    "ref column": (edit_column(ref="req-9999"), [("column-edited", K)]),
    "recorded_at column": (shift_recorded_at, [("column-edited", K)]),
    "hash column": (edit_column(hash="ab" * 32), [("column-edited", K)]),
    "prev_hash column": (edit_column(prev_hash="ab" * 32), [("column-edited", K)]),
    "delete a row": (lambda ledger: c.delete_seqs(ledger.db, K), [("deleted", K)]),
    "delete a row and renumber": (delete_renumbered, [("deleted", K)]),
    "insert a sealed row and renumber": (insert_sealed, [("inserted", K)]),
    "insert an unsealed row and renumber": (insert_unsealed, [("inserted", K)]),
    "swap two adjacent rows": (swap(K, K + 1), [("reordered", K)]),
    "swap two distant rows": (swap(K, K + 5), [("reordered", K)]),
    "truncate the tail": (lambda ledger: c.delete_seqs(ledger.db, 19, 20, 21), [("truncated", 19)]),
    "rewrite from an entry, hashes recomputed": (rewrite_from(lambda _: K), [("rewritten", 10)]),
    "forge the head, hashes recomputed": (rewrite_from(lambda ledger: ledger.head), [("rewritten", 21)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tampering_is_detected_at_the_first_broken_link(case: str, ledger: Ledger) -> None:
    tamper, expected = CASES[case]
    tamper(ledger)
    report = c.verify(ledger.db, ledger.signer)
    assert not report.ok
    assert [(p.kind, p.seq) for p in report.problems] == expected, report.summary()


def test_the_messages_say_what_is_wrong(ledger: Ledger) -> None:
    edit_column(amount_nanos=-1)(ledger)
    [problem] = c.verify(ledger.db, ledger.signer).problems
    assert (
        problem.message
        == "seq 7: column amount_nanos is -1 but the body says -1850006 (column edited without the body)"
    )


def test_a_checkpoint_resigned_with_another_key_is_rejected(ledger: Ledger) -> None:
    # The attacker truncates the tail and signs the new head with a key of their own.
    c.delete_seqs(ledger.db, 20, 21)
    forged = c.new_signer().sign(ORG, 19, c.row(ledger.db, 19).hash)
    with ledger.db.transaction() as session:
        session.execute(
            update(LedgerCheckpoint)
            .where(LedgerCheckpoint.seq == 21)
            .values(seq=19, hash=forged.hash, key_id=forged.key_id, signature=forged.signature)
        )
    report = c.verify(ledger.db, ledger.signer)
    assert [p.kind for p in report.problems] == ["bad-checkpoint"]
    assert "unknown key" in report.problems[0].message


def test_a_forged_checkpoint_is_rejected(ledger: Ledger) -> None:
    # A checkpoint claiming the real key, with a signature copied from another checkpoint.
    with ledger.db.read() as session:
        real = session.query(LedgerCheckpoint).filter_by(seq=10).one()
        key, signature = real.key_id, real.signature
    c.delete_seqs(ledger.db, 20, 21)
    with ledger.db.transaction() as session:
        session.execute(
            update(LedgerCheckpoint)
            .where(LedgerCheckpoint.seq == 21)
            .values(seq=19, hash=c.row(ledger.db, 19).hash, key_id=key, signature=signature)
        )
    report = c.verify(ledger.db, ledger.signer)
    assert [(p.kind, p.seq) for p in report.problems] == [("bad-checkpoint", 19)]
    assert "does not verify" in report.problems[0].message


def test_a_garbage_signature_is_rejected(ledger: Ledger) -> None:
    with ledger.db.transaction() as session:
        session.execute(
            update(LedgerCheckpoint)
            .where(LedgerCheckpoint.seq == 10)
            .values(signature=base64.b64encode(b"x" * 64).decode())
        )
    assert [p.kind for p in c.verify(ledger.db, ledger.signer).problems] == ["bad-checkpoint"]
