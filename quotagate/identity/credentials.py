"""Gateway credentials: ``<key_id>.<secret>``, generated with 256 bits, stored only as a hash."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

SECRET_BYTES = 32  # 256 bits
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
# Headers a caller may put a gateway credential in, lower case (Envoy and mitmproxy both lower-case names).
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-api-token")


@dataclass(frozen=True, slots=True)
class Credential:
    key_id: str
    secret: str

    def __str__(self) -> str:
        return f"{self.key_id}.{self.secret}"

    def __repr__(self) -> str:  # never print a secret by accident
        return f"Credential(key_id={self.key_id!r}, secret=<redacted>)"


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def parse_credential(raw: str) -> Credential | None:
    """``key_id.secret`` -> Credential; None for anything malformed (the caller answers 401)."""
    key_id, dot, secret = raw.strip().partition(".")
    if not dot or not _KEY_ID.match(key_id) or not _SECRET.match(secret):
        return None
    return Credential(key_id, secret)


@dataclass(frozen=True, slots=True)
class MalformedCredential:
    """A credential was sent but is no ``key_id.secret``: refused as invalid (401), not as missing."""


MALFORMED = MalformedCredential()


def credential_from_headers(headers: Mapping[str, str]) -> Credential | MalformedCredential | None:
    """The gateway credential from `Authorization: Bearer`, `x-api-key` or `X-API-Token` (lower-cased names).

    `Authorization` with another scheme (`Basic ...`) holds no gateway key, so it does not hide an `x-api-key` or
    `X-API-Token`; on its own it is MALFORMED, like a header whose value is no ``key_id.secret``. None: no
    credential header at all."""
    auth = (headers.get("authorization") or "").strip()
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer":
        return parse_credential(token) or MALFORMED
    for name in ("x-api-key", "x-api-token"):
        value = (headers.get(name) or "").strip()
        if value:
            return parse_credential(value) or MALFORMED
    return MALFORMED if auth else None


class SecretHasher:
    """SHA-256 of the secret, or HMAC-SHA-256 with a server-side pepper when one is configured."""

    def __init__(self, pepper: bytes | None = None) -> None:
        self._pepper = pepper

    def hash(self, key_id: str, secret: str) -> str:
        # The key id is bound into the digest so a hash copied to another key id does not verify.
        message = f"{key_id}.{secret}".encode()
        if self._pepper:
            return hmac.new(self._pepper, message, hashlib.sha256).hexdigest()
        return hashlib.sha256(message).hexdigest()

    def matches(self, key_id: str, secret: str, stored_hash: str | None) -> bool:
        """Constant-time comparison; a missing stored hash still costs one hash so timing does not tell."""
        return same_digest(self.hash(key_id, secret), stored_hash)


_NO_HASH = "0" * 64  # compared against when there is nothing stored: the same work as a real comparison


def same_digest(candidate: str, stored_hash: str | None) -> bool:
    """`candidate` equals `stored_hash`, compared in constant time; never equal to a missing hash."""
    return hmac.compare_digest(candidate, stored_hash or _NO_HASH) and stored_hash is not None
