"""The audit export: one organization's chain as files an auditor verifies without the database.

    DIR/manifest.json      what the export holds (org, first_seq, last_seq, start_hash, key id, time)
    DIR/entries.jsonl      one entry per line, in seq order
    DIR/checkpoints.jsonl  the signed checkpoints of that range
    DIR/public_key.pem     the Ed25519 public key of the checkpoints
    DIR/README.md          how to verify, with or without Quotagate

An entry line holds the stored columns and ``body``, the exact canonical bytes that were hashed, as a JSON
string: ``{"seq", "kind", "ref", "amount_nanos", "recorded_at", "prev_hash", "hash", "body"}``. An export
that does not start at seq 1 starts right after a checkpoint, so its first link is signed too.

This module imports neither the store nor the settings: it is what `quotagate audit verify --export`
and `python -m quotagate.ledger DIR` run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from quotagate.errors import ConfigError
from quotagate.ledger.chain import GENESIS
from quotagate.ledger.checkpoint import Checkpoint, KeyRing, key_id, load_public_keys, read_checkpoints
from quotagate.ledger.verify import GENESIS_ANCHOR, Anchor, ChainReport, Problem, Row, verify_chain

FORMAT = "quotagate.ledger.export/1"
MANIFEST, ENTRIES, CHECKPOINTS, PUBLIC_KEY, README = (
    "manifest.json",
    "entries.jsonl",
    "checkpoints.jsonl",
    "public_key.pem",
    "README.md",
)


def entry_line(row: Row) -> bytes:
    seq, kind, ref, amount, recorded_at, body, prev_hash, digest = row
    line = {
        "seq": seq,
        "kind": kind,
        "ref": ref,
        "amount_nanos": amount,
        "recorded_at": recorded_at,
        "prev_hash": prev_hash,
        "hash": digest,
        "body": body.decode(),
    }
    return orjson.dumps(line) + b"\n"


class _EntryReader:
    """Rows from entries.jsonl; a line that is not an entry stops the stream and is kept as `error`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: Problem | None = None

    def __iter__(self) -> Iterator[Row]:
        loads = orjson.loads
        fields = itemgetter("seq", "kind", "ref", "amount_nanos", "recorded_at", "body", "prev_hash", "hash")
        with self.path.open("rb") as f:
            for number, line in enumerate(f, 1):
                try:
                    seq, kind, ref, amount, recorded_at, body, prev_hash, digest = fields(loads(line))
                    row = (seq, kind, ref, amount, recorded_at, body.encode(), prev_hash, digest)
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                    self.error = Problem("malformed", None, f"{ENTRIES} line {number} is not an entry ({exc})")
                    return
                yield row


def verify_export(
    directory: Path, pinned_keys: list[Ed25519PublicKey] | None = None, extra: Iterable[Checkpoint] = ()
) -> ChainReport:
    """Verify an export, also against `extra` checkpoints (e.g. fetched from the anchor sink).

    Without `pinned_keys` the export's own public key is trusted: pin the key obtained from the operator
    out of band, or compare the key id the report prints."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        keys = pinned_keys or load_public_keys((directory / PUBLIC_KEY).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{directory} is not a readable ledger export: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{directory / MANIFEST}: not a {FORMAT} manifest")
    org, first, last = manifest["org"], manifest["first_seq"], manifest["last_seq"]
    ring = KeyRing(keys)
    checkpoints = [*read_checkpoints(directory / CHECKPOINTS), *(cp for cp in extra if cp.org == org)]
    start, unanchored = GENESIS_ANCHOR, None
    if first > 1:
        anchors = [cp for cp in checkpoints if cp.org == org and cp.seq == first - 1 and ring.problem(cp) is None]
        if anchors:
            start = Anchor(first - 1, anchors[0].hash)
        else:
            start = Anchor(first - 1, manifest.get("start_hash", GENESIS))
            unanchored = Problem(
                "unanchored", first, f"the export starts at seq {first} but no valid checkpoint attests seq {first - 1}"
            )
    reader = _EntryReader(directory / ENTRIES)
    report = verify_chain(org, reader, keys=ring, checkpoints=checkpoints, start=start)
    if reader.error is not None:  # the chain verified up to the bad line: what follows was never read
        report.problems = [p for p in report.problems if p.kind != "truncated"] + [reader.error]
    elif report.ok and report.head_seq != last:
        report.problems.append(
            Problem(
                "truncated",
                report.head_seq + 1,
                f"{MANIFEST} lists entries up to seq {last} but {ENTRIES} ends at seq {report.head_seq}",
            )
        )
    if unanchored is not None:
        report.problems.insert(0, unanchored)
    return report


def export_manifest(
    *, org: str, first_seq: int, last_seq: int, start_hash: str, checkpoints: int, public: Ed25519PublicKey, at: str
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "org": org,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "entries": last_seq - first_seq + 1,
        "start_hash": start_hash,
        "checkpoints": checkpoints,
        "key_id": key_id(public),
        "exported_at": at,
    }


def readme(manifest: dict[str, Any]) -> str:
    return README_TEXT.format(**manifest)


README_TEXT = """\
# Quotagate ledger export: {org}

Entries {first_seq}..{last_seq} of the hash chain of organization `{org}`, exported {exported_at}.
The checkpoints are signed with the Ed25519 key whose id (SHA-256 of the raw 32-byte public key) is

    {key_id}

Ask the operator for that key through a channel other than this export, and check the id: anyone who
can write this directory can also replace `public_key.pem`.

## Files

* `entries.jsonl`: one entry per line: `seq`, `kind`, `ref`, `amount_nanos` (integer nanos of the unit;
  + credit, - debit), `recorded_at`, `prev_hash`, `hash` and `body`. `body` is the canonical JSON text
  (RFC 8785) of the entry object `{{"org", "seq", "kind", "ref", "amount_nanos", "recorded_at", "data"}}`;
  its UTF-8 bytes are what was hashed. The other fields must agree with it.
* `checkpoints.jsonl`: signed chain heads `{{"format", "org", "seq", "hash", "signed_at", "key_id",
  "signature"}}`. The signature (base64) is Ed25519 over RFC 8785 of the object without `signature`.
* `public_key.pem`: the checkpoints' public key.
* `manifest.json`: what the export holds; `start_hash` is the hash of seq {first_seq} - 1 (64 zeros for
  an export from the genesis entry; otherwise a checkpoint in `checkpoints.jsonl` signs it).

## The chain

    hash(n) = SHA-256(bytes.fromhex(hash(n - 1)) || UTF-8(body(n))),   hash(0) = 32 zero bytes

seq runs 1, 2, 3, ... without gaps. Changing, removing, inserting or reordering an entry changes every
later hash; a checkpoint fixes the hash at its seq, so the chain must still reach it and match it.

## Verify

With Quotagate installed (no database or settings needed):

    quotagate audit verify --export . [--public-key operator-key.pem]
    python -m quotagate.ledger . [--public-key operator-key.pem]

Or with nothing but Python and `cryptography` (`python verify.py DIR`):

```python
import base64, hashlib, json, sys
from pathlib import Path
from cryptography.hazmat.primitives.serialization import load_pem_public_key

d = Path(sys.argv[1])
manifest = json.loads((d / "manifest.json").read_text())
key = load_pem_public_key((d / "public_key.pem").read_bytes())

def canonical(obj):  # RFC 8785 for objects of ASCII strings and integers, like a checkpoint statement
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

heads = {{}}
for line in (d / "checkpoints.jsonl").read_text().splitlines():
    cp = json.loads(line)
    key.verify(base64.b64decode(cp.pop("signature")), canonical(cp))  # raises InvalidSignature
    assert cp["org"] == manifest["org"], "checkpoint of another organization"
    heads[cp["seq"]] = cp["hash"]
seq = manifest["first_seq"] - 1
prev = heads[seq] if seq else "0" * 64
for line in (d / "entries.jsonl").read_text().splitlines():
    e = json.loads(line)
    entry = json.loads(e["body"])
    seq += 1
    assert e["seq"] == entry["seq"] == seq and entry["org"] == manifest["org"], f"seq {{seq}}: out of place"
    for name in ("kind", "ref", "amount_nanos", "recorded_at"):
        assert e[name] == entry[name], f"seq {{seq}}: {{name}} differs from the body"
    assert e["prev_hash"] == prev, f"seq {{seq}}: does not link to seq {{seq - 1}}"
    prev = hashlib.sha256(bytes.fromhex(prev) + e["body"].encode()).hexdigest()
    assert e["hash"] == prev, f"seq {{seq}}: the body does not hash to the recorded hash"
    assert heads.get(seq, prev) == prev, f"seq {{seq}}: does not match its signed checkpoint"
assert seq == manifest["last_seq"] and seq >= max(heads, default=0), "entries missing at the end"
print(f"OK: {{manifest['org']}} seq {{manifest['first_seq']}}..{{seq}}, head {{prev}}")
```

(`quotagate audit verify` also checks that each body's top level is canonical RFC 8785 around its `data`
object, whose bytes the hash covers as they are, and names the kind of the first broken link: edited,
deleted, inserted, reordered, truncated.)
"""
