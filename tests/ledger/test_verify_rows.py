"""The pure verifier over rows in memory: what the database tests cannot easily produce."""

from __future__ import annotations

import orjson
import pytest

from quotagate.ledger.chain import GENESIS, Entry, canonical_bytes, link_hash, seal
from quotagate.ledger.checkpoint import KeyRing
from quotagate.ledger.verify import Anchor, Row, verify_chain
from tests.ledger.chains import new_signer

ORG = "acme"
STAMP = "2026-01-01T00:00:00.000000+00:00"


def chain(n: int, data: dict[str, object] | None = None) -> list[Row]:
    rows: list[Row] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        body, digest = seal(Entry(ORG, seq, "usage", f"r{seq}", -seq, STAMP, data or {"i": seq}), prev)
        rows.append((seq, "usage", f"r{seq}", -seq, STAMP, body, prev, digest))
        prev = digest
    return rows


def kinds(rows: list[Row], **kw: object) -> list[tuple[str, int | None]]:
    report = verify_chain(ORG, rows, keys=kw.pop("keys", KeyRing([])), **kw)  # type: ignore[arg-type]
    return [(p.kind, p.seq) for p in report.problems]


def replace(rows: list[Row], at: int, **values: object) -> list[Row]:
    names = ("seq", "kind", "ref", "amount_nanos", "recorded_at", "body", "prev_hash", "hash")
    row = dict(zip(names, rows[at - 1], strict=True)) | values
    return [*rows[: at - 1], tuple(row.values()), *rows[at:]]  # type: ignore[list-item]


def test_empty_and_valid_chains() -> None:
    assert kinds([]) == []
    report = verify_chain(ORG, chain(5), keys=KeyRing([]))
    assert (report.ok, report.entries, report.head_seq) == (True, 5, 5)


def test_unicode_and_floats_in_data_verify() -> None:
    # orjson and RFC 8785 differ on floats and on keys beyond the BMP; the fast check never parses data.
    assert kinds(chain(3, {"\U0001f600": 1.5, "\ue000": "é\u2028", "n": 1e21})) == []


def test_a_non_canonical_body_with_a_valid_hash_is_reported() -> None:
    rows = chain(3)
    content = orjson.loads(rows[1][5])
    body = orjson.dumps(content, option=orjson.OPT_INDENT_2)  # hashes fine, but not canonical
    assert body != canonical_bytes(content)
    rows = replace(rows, 2, body=body, hash=link_hash(rows[0][7], body))
    rows = replace(rows, 3, prev_hash=rows[1][7])
    rows = replace(rows, 3, hash=link_hash(rows[2][6], rows[2][5]))
    assert kinds(rows) == [("non-canonical", 2)]


def test_a_body_of_another_organization_is_reported() -> None:
    body, digest = seal(Entry("other", 1, "usage", "r1", -1, STAMP, {}), GENESIS)
    assert kinds([(1, "usage", "r1", -1, STAMP, body, GENESIS, digest)]) == [("wrong-org", 1)]


def test_a_body_that_is_not_an_entry_is_reported() -> None:
    body = b'{"hello":"world"}'
    assert kinds([(1, "usage", "r1", -1, STAMP, body, GENESIS, link_hash(GENESIS, body))]) == [("malformed", 1)]


def test_a_wrong_column_type_is_reported() -> None:
    assert kinds(replace(chain(2), 2, amount_nanos="-2")) == [("column-edited", 2)]
    # An export line may hold any JSON type: `true` is not the body's kind, even where `1 == True`.
    assert kinds(replace(chain(2), 2, kind=True)) == [("column-edited", 2)]
    assert kinds(replace(chain(2), 2, recorded_at=None)) == [("column-edited", 2)]


def mixed_chain() -> list[Row]:
    """Kinds and time stamps that change from row to row, and repeat (what the verifier caches)."""
    rows: list[Row] = []
    prev = GENESIS
    for seq in range(1, 9):
        kind = ("usage", "usage", "admin", "credit")[seq % 4]
        stamp = f"2026-01-01T00:00:0{seq // 3}.000000+00:00"
        body, digest = seal(Entry(ORG, seq, kind, None if seq == 5 else f"r{seq}", -seq, stamp, {}), prev)
        rows.append((seq, kind, None if seq == 5 else f"r{seq}", -seq, stamp, body, prev, digest))
        prev = digest
    return rows


@pytest.mark.parametrize("at", range(1, 9))
def test_each_column_is_compared_whatever_the_previous_row_held(at: int) -> None:
    rows = mixed_chain()
    assert kinds(rows) == []
    previous = rows[at - 2] if at > 1 else rows[1]
    other_kind = "credit" if rows[at - 1][1] != "credit" else "usage"
    for column, value in (
        ("kind", previous[1] if previous[1] != rows[at - 1][1] else other_kind),
        ("recorded_at", previous[4] if previous[4] != rows[at - 1][4] else "2026-01-02T00:00:00.000000+00:00"),
        ("ref", "r99"),
        ("seq", at + 100),
    ):
        problems = kinds(replace(rows, at, **{column: value}))
        assert problems and problems[0][0] in {"column-edited", "deleted"}, (column, problems)


def test_duplicate_seq_is_out_of_order() -> None:
    rows = chain(3)
    assert kinds([rows[0], rows[1], rows[1], rows[2]]) == [("out-of-order", 2)]


def test_the_first_entry_must_be_seq_1() -> None:
    assert kinds(chain(3)[1:]) == [("deleted", 1)]


def test_a_segment_verifies_from_a_signed_anchor() -> None:
    signer = new_signer()
    rows = chain(6)
    cp = signer.sign(ORG, 3, rows[2][7])
    start = Anchor(3, cp.hash)
    report = verify_chain(ORG, rows[3:], keys=KeyRing([signer.public_key]), checkpoints=[cp], start=start)
    assert (report.ok, report.entries, report.head_seq, report.checkpoints_matched) == (True, 3, 6, 1)


def test_checkpoints_of_another_organization_or_an_unknown_key_fail() -> None:
    signer, other = new_signer(), new_signer()
    rows = chain(3)
    theirs = signer.sign("other", 3, rows[2][7])
    unknown = other.sign(ORG, 3, rows[2][7])
    assert kinds(rows, keys=KeyRing([signer.public_key]), checkpoints=[theirs, unknown]) == [
        ("wrong-org", 3),
        ("bad-checkpoint", 3),
    ]


@pytest.mark.parametrize("at", [1, 3, 5])
def test_a_checkpoint_pins_the_hash_at_its_seq(at: int) -> None:
    signer = new_signer()
    rows = chain(5)
    good = signer.sign(ORG, at, rows[at - 1][7])
    assert kinds(rows, keys=KeyRing([signer.public_key]), checkpoints=[good]) == []
    forged = signer.sign(ORG, at, "cd" * 32)  # a real signature over a hash the chain never had
    assert kinds(rows, keys=KeyRing([signer.public_key]), checkpoints=[forged]) == [("rewritten", at)]
    assert kinds(rows[: at - 1], keys=KeyRing([signer.public_key]), checkpoints=[good]) == [("truncated", at)]


def test_the_verifier_streams() -> None:
    """Rows are consumed from an iterator once, never held: a generator of 50k rows is enough to show it."""

    def rows() -> object:
        prev = GENESIS
        for seq in range(1, 50_001):
            body = (
                b'{"amount_nanos":0,"data":{},"kind":"usage","org":"acme","recorded_at":"%s","ref":null,"seq":%d}'
                % (
                    STAMP.encode(),
                    seq,
                )
            )
            digest = link_hash(prev, body)
            yield (seq, "usage", None, 0, STAMP, body, prev, digest)
            prev = digest

    report = verify_chain(ORG, rows(), keys=KeyRing([]))  # type: ignore[arg-type]
    assert report.ok, report.summary()
    assert report.entries == 50_000
