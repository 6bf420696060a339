"""Signed actor identity: one workspace key, verified per-request user/team/app attribution.

Headers (see docs/governance.md for the client side)::

    X-Quotagate-Actor: user=alice;team=ml;app=notebook
    X-Quotagate-Actor-Signature: t=1767225600,n=3q2-7wEAAAAAAAAAAAAAAA,v2=<hex HMAC-SHA-256>

``v2`` is HMAC-SHA-256 under the project's signing secret over
``"v2\\n" + t + "\\n" + n + "\\n" + key_id + "\\n" + canonical_actor``, where ``key_id`` is the part of the
gateway key before the dot, ``canonical_actor`` the actor's fields sorted by name, ``name=value`` joined
by ``;``, and ``n`` a fresh random nonce per request. ``t`` (Unix seconds) must be within the replay
window of the gateway's clock, and the gateway accepts each nonce once (quotagate.governance.replay):
a captured header cannot be sent again. Binding the key id means a signature lifted from one key's
traffic does not attribute another key's requests.

The older ``v1`` (``"v1\\n" + t + "\\n" + key_id + "\\n" + canonical_actor``, no nonce) is accepted
unless the project requires nonces; it is protected by the window alone.
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
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_MAX_HEADER = 1024


class ActorPolicy(StrEnum):
    OFF = "off"  # actor headers are ignored (and never forwarded)
    OPTIONAL = "optional"  # verified actors are recorded; bad or unsigned ones are ignored and flagged
    REQUIRED = "required"  # every request must carry a validly signed actor


class NoncePolicy(StrEnum):
    OPTIONAL = "optional"  # v1 (window only) accepted; a v2 nonce is accepted once
    REQUIRED = "required"  # only v2 signatures, each nonce once


class ActorProblem(StrEnum):
    MISSING = "missing"  # no actor header
    UNSIGNED = "unsigned"  # an actor header without a signature
    MALFORMED = "malformed"  # unparsable actor or signature header
    EXPIRED = "expired"  # timestamp outside the replay window
    BAD_SIGNATURE = "bad_signature"  # no signature matches: tampered, wrong secret or wrong key
    NO_SECRET = "no_secret"  # the gateway has no signing secret for the project
    NONCE_REQUIRED = "nonce_required"  # a valid v1 signature where the project requires v2 (a nonce)
    REPLAYED = "replayed"  # a valid v2 signature whose nonce was already used


@dataclass(frozen=True, slots=True)
class Verified:
    fields: Mapping[str, str]
    timestamp: int
    nonce: str | None = None  # set when a v2 signature matched: to be accepted once

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


def signing_string(timestamp: int, key_id: str, fields: Mapping[str, str], nonce: str | None = None) -> bytes:
    """The v2 string with a nonce, the v1 string without."""
    if nonce is None:
        return f"v1\n{timestamp}\n{key_id}\n{canonical_actor(fields)}".encode()
    return f"v2\n{timestamp}\n{nonce}\n{key_id}\n{canonical_actor(fields)}".encode()


def _digest(secret: str, timestamp: int, key_id: str, fields: Mapping[str, str], nonce: str | None) -> str:
    return hmac.new(secret.encode(), signing_string(timestamp, key_id, fields, nonce), hashlib.sha256).hexdigest()


def sign_actor(
    secret: str, key_id: str, fields: Mapping[str, str], timestamp: int, nonce: str | None = None
) -> dict[str, str]:
    """The two request headers for `fields` (what a client sends; docs/governance.md has a standalone copy):
    v2 with `nonce` (a fresh one per request: quotagate.governance.replay.new_nonce), else v1."""
    digest = _digest(secret, timestamp, key_id, fields, nonce)
    signed = f"t={timestamp},v1={digest}" if nonce is None else f"t={timestamp},n={nonce},v2={digest}"
    return {ACTOR_HEADER: canonical_actor(fields), SIGNATURE_HEADER: signed}


@dataclass(frozen=True, slots=True)
class _Signature:
    timestamp: int
    nonce: str | None
    v1: list[str]
    v2: list[str]


def _parse_signature(header: str) -> _Signature | None:
    timestamp: int | None = None
    nonce: str | None = None
    v1: list[str] = []
    v2: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "n":
            if nonce is not None or not _NONCE.match(value):
                return None
            nonce = value
        elif name in ("v1", "v2") and len(value) == 64:
            (v1 if name == "v1" else v2).append(value.lower())
    if timestamp is None or not (v1 or v2) or (v2 and nonce is None):
        return None
    return _Signature(timestamp, nonce, v1, v2)


def _matches(expected: str, candidates: list[str]) -> bool:
    # compare_digest on every candidate: the time taken does not depend on where a guess goes wrong.
    matched = False
    for digest in candidates:
        matched |= hmac.compare_digest(expected, digest)
    return matched


def verify_actor(
    headers: Mapping[str, str],
    key_id: str,
    secret: str | None,
    now: float,
    window_s: int,
    *,
    nonce_policy: NoncePolicy = NoncePolicy.OPTIONAL,
) -> Verified | ActorProblem:
    """The verified actor of a request, or why there is none. Several `v1=`/`v2=` values may be sent (the
    client signing with an old and a new secret during a rotation); one match is enough. A v2 match
    carries its nonce, which the caller must still accept once (GovernanceGate does)."""
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
    t = signature.timestamp
    if abs(now - t) > window_s:
        return ActorProblem.EXPIRED
    if signature.v2 and _matches(_digest(secret, t, key_id, fields, signature.nonce), signature.v2):
        return Verified(fields, t, signature.nonce)
    if signature.v1 and _matches(_digest(secret, t, key_id, fields, None), signature.v1):
        # v1 does not cover `n`: whatever nonce came with it proves nothing.
        return ActorProblem.NONCE_REQUIRED if nonce_policy is NoncePolicy.REQUIRED else Verified(fields, t)
    return ActorProblem.BAD_SIGNATURE
