"""Signed actor identity: one workspace key, verified per-request user/team/app attribution.

Headers (see docs/governance.md for the client side)::

    X-Quotagate-Actor: user=alice;team=ml;app=notebook
    X-Quotagate-Actor-Signature: t=1767225600,v1=<hex HMAC-SHA-256>

The signature is HMAC-SHA-256 under the project's signing secret over the canonical string
``"v1\\n" + t + "\\n" + key_id + "\\n" + canonical_actor``, where ``key_id`` is the part of the gateway
key before the dot and ``canonical_actor`` is the actor's fields sorted by name, ``name=value`` joined by
``;``. ``t`` (Unix seconds) must be within the replay window of the gateway's clock. Binding the key id
means a signature lifted from one key's traffic does not attribute another key's requests.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

ACTOR_HEADER = "x-quotagate-actor"
SIGNATURE_HEADER = "x-quotagate-actor-signature"
FIELDS = ("user", "team", "app", "env")
_VALUE = re.compile(r"^[A-Za-z0-9._@+:-]{1,128}$")
_MAX_HEADER = 1024


class ActorPolicy(StrEnum):
    OFF = "off"  # actor headers are ignored (and never forwarded)
    OPTIONAL = "optional"  # verified actors are recorded; bad or unsigned ones are ignored and flagged
    REQUIRED = "required"  # every request must carry a validly signed actor


class ActorProblem(StrEnum):
    MISSING = "missing"  # no actor header
    UNSIGNED = "unsigned"  # an actor header without a signature
    MALFORMED = "malformed"  # unparsable actor or signature header
    EXPIRED = "expired"  # timestamp outside the replay window
    BAD_SIGNATURE = "bad_signature"  # no signature matches: tampered, wrong secret or wrong key
    NO_SECRET = "no_secret"  # the gateway has no signing secret for the project


@dataclass(frozen=True, slots=True)
class Verified:
    fields: Mapping[str, str]

    def tags(self) -> dict[str, str]:
        return {f"actor.{name}": value for name, value in self.fields.items()}


def parse_actor(header: str) -> dict[str, str] | None:
    """`user=alice;team=ml` -> {"user": "alice", "team": "ml"}; None when malformed."""
    if len(header) > _MAX_HEADER:
        return None
    fields: dict[str, str] = {}
    for part in header.split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep or name not in FIELDS or name in fields or not _VALUE.match(value):
            return None
        fields[name] = value
    return fields or None


def canonical_actor(fields: Mapping[str, str]) -> str:
    return ";".join(f"{name}={fields[name]}" for name in sorted(fields))


def signing_string(timestamp: int, key_id: str, fields: Mapping[str, str]) -> bytes:
    return f"v1\n{timestamp}\n{key_id}\n{canonical_actor(fields)}".encode()


def sign_actor(secret: str, key_id: str, fields: Mapping[str, str], timestamp: int) -> dict[str, str]:
    """The two request headers for `fields` (what a client sends; docs/governance.md has a standalone copy)."""
    digest = hmac.new(secret.encode(), signing_string(timestamp, key_id, fields), hashlib.sha256).hexdigest()
    return {ACTOR_HEADER: canonical_actor(fields), SIGNATURE_HEADER: f"t={timestamp},v1={digest}"}


def _parse_signature(header: str) -> tuple[int, list[str]] | None:
    timestamp: int | None = None
    digests: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1" and len(value) == 64:
            digests.append(value.lower())
    return (timestamp, digests) if timestamp is not None and digests else None


def verify_actor(
    headers: Mapping[str, str], key_id: str, secret: str | None, now: float, window_s: int
) -> Verified | ActorProblem:
    """The verified actor of a request, or why there is none. Several `v1=` values may be sent (the
    client signing with an old and a new secret during a rotation); one match is enough."""
    raw = headers.get(ACTOR_HEADER)
    if raw is None:
        return ActorProblem.MISSING
    raw_signature = headers.get(SIGNATURE_HEADER)
    if raw_signature is None:
        return ActorProblem.UNSIGNED
    fields = parse_actor(raw)
    signature = _parse_signature(raw_signature)
    if fields is None or signature is None:
        return ActorProblem.MALFORMED
    if not secret:
        return ActorProblem.NO_SECRET
    timestamp, digests = signature
    if abs(now - timestamp) > window_s:
        return ActorProblem.EXPIRED
    expected = hmac.new(secret.encode(), signing_string(timestamp, key_id, fields), hashlib.sha256).hexdigest()
    # compare_digest on every candidate: the time taken does not depend on where a guess goes wrong.
    matched = False
    for digest in digests:
        matched |= hmac.compare_digest(expected, digest)
    return Verified(fields) if matched else ActorProblem.BAD_SIGNATURE
