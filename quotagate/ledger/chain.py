"""The hash chain: ``hash = SHA-256(prev_hash || canonical_bytes(entry))``.

``canonical_bytes`` is RFC 8785 (JSON Canonicalization Scheme) of the entry object
``{"org", "seq", "kind", "ref", "amount_nanos", "recorded_at", "data"}``: keys sorted, no spaces,
numbers in their shortest form, UTF-8. ``prev_hash`` is the 32 raw bytes of the previous entry's hash
(the genesis entry of an organization uses 32 zero bytes). Money inside ``data`` is a decimal string or
integer nanos, never a float, so every verifier computes the same bytes. Integers stay within
+-(2**53 - 1), the range every JSON implementation reads exactly (I-JSON, RFC 7493). docs/ledger.md is
the full specification.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
import rfc8785

GENESIS = "0" * 64
# Admin actions that concern no organization (provider credentials, deployment settings) are appended to
# this chain; manifest identifiers start with a letter or digit, so no organization can take the name.
GLOBAL_CHAIN = "_global"
MAX_SAFE_INT = 2**53 - 1
ENTRY_FIELDS = frozenset({"org", "seq", "kind", "ref", "amount_nanos", "recorded_at", "data"})


@dataclass(frozen=True, slots=True)
class Entry:
    org: str
    seq: int
    kind: str
    ref: str | None
    amount_nanos: int
    recorded_at: str  # ISO 8601 UTC, microseconds
    data: dict[str, Any]

    def content(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "seq": self.seq,
            "kind": self.kind,
            "ref": self.ref,
            "amount_nanos": self.amount_nanos,
            "recorded_at": self.recorded_at,
            "data": self.data,
        }


def canonical_bytes(value: Any) -> bytes:
    """RFC 8785 of a JSON value.

    orjson (sorted keys) writes exactly RFC 8785 for strings, integers, booleans, null, lists and objects
    with ASCII keys, ~10x faster than the pure-Python implementation; only values with floats (number
    formats differ) or non-ASCII keys (RFC 8785 sorts UTF-16 code units) need the latter."""
    if _plain(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER)
        except orjson.JSONEncodeError:
            pass  # an integer beyond +-(2**53 - 1): rfc8785 raises its own, clearer error
    return bytes(rfc8785.dumps(value))


def _plain(value: Any) -> bool:
    kind = type(value)
    if kind is dict:
        return all(type(k) is str and k.isascii() and _plain(v) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_plain(v) for v in value)
    return kind is str or kind is int or kind is bool or value is None


def link_hash(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


def seal(entry: Entry, prev_hash: str) -> tuple[bytes, str]:
    """(canonical body, hash) of an entry appended after `prev_hash`."""
    if not -MAX_SAFE_INT <= entry.amount_nanos <= MAX_SAFE_INT:
        raise ValueError(f"amount_nanos {entry.amount_nanos} is outside +-(2**53 - 1): split the entry")
    body = canonical_bytes(entry.content())
    return body, link_hash(prev_hash, body)


def json_safe(value: Any) -> Any:
    """`value` with integers beyond +-(2**53 - 1) written as decimal strings, so RFC 8785 accepts it."""
    if isinstance(value, bool) or not isinstance(value, int | dict | list | tuple):
        return value
    if isinstance(value, int):
        return value if -MAX_SAFE_INT <= value <= MAX_SAFE_INT else str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return [json_safe(v) for v in value]
