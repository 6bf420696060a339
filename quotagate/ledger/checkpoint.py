"""Signed checkpoints: an organization's chain head (org, seq, hash, time) signed with Ed25519.

The signed bytes are RFC 8785 of ``{"format", "org", "seq", "hash", "signed_at", "key_id"}``; ``key_id`` is
the SHA-256 (hex) of the 32-byte raw public key. A checkpoint an auditor holds (from an anchor sink, an
export, a timestamping service) proves the chain had that head at that time: a later truncation or
rewrite of anything up to ``seq`` no longer matches it.

Nothing here touches settings or the database, so the offline verifier can import it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from quotagate.errors import ConfigError

if TYPE_CHECKING:
    from quotagate.settings import Settings

FORMAT = "quotagate.ledger.checkpoint/1"
SIGNING_KEY_FILE = "ledger-signing.key"


def iso(when: datetime) -> str:
    """The one timestamp form of the ledger: UTC, microseconds, ``+00:00``."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    org: str
    seq: int
    hash: str
    signed_at: str
    key_id: str
    signature: str  # base64 of the 64-byte Ed25519 signature

    def signed_bytes(self) -> bytes:
        statement: dict[str, Any] = {
            "format": FORMAT,
            "org": self.org,
            "seq": self.seq,
            "hash": self.hash,
            "signed_at": self.signed_at,
            "key_id": self.key_id,
        }
        return bytes(rfc8785.dumps(statement))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "org": self.org,
            "seq": self.seq,
            "hash": self.hash,
            "signed_at": self.signed_at,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Checkpoint:
        """Parse a checkpoint statement; ValueError names what is wrong with it."""
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise ValueError(f"not a checkpoint (expected format {FORMAT!r})")
        types = {"org": str, "seq": int, "hash": str, "signed_at": str, "key_id": str, "signature": str}
        for name, kind in types.items():
            if type(obj.get(name)) is not kind:
                raise ValueError(f"checkpoint field {name!r} must be a {kind.__name__}")
        return cls(obj["org"], obj["seq"], obj["hash"], obj["signed_at"], obj["key_id"], obj["signature"])

    def describe(self) -> str:
        return f"checkpoint seq {self.seq} signed {self.signed_at} by key {self.key_id[:16]}"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class Signer:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key = private.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, org: str, seq: int, head_hash: str, at: datetime | None = None) -> Checkpoint:
        unsigned = Checkpoint(org, seq, head_hash, iso(at or datetime.now(UTC)), self.key_id, "")
        signature = base64.b64encode(self._private.sign(unsigned.signed_bytes())).decode()
        return Checkpoint(org, seq, head_hash, unsigned.signed_at, self.key_id, signature)


class KeyRing:
    """The public keys a verifier trusts, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self.keys = {key_id(k): k for k in keys}

    def problem(self, cp: Checkpoint) -> str | None:
        """Why `cp` cannot be trusted, or None when its signature verifies with a trusted key."""
        public = self.keys.get(cp.key_id)
        if public is None:
            return f"{cp.describe()}: signed by an unknown key (re-signed or forged?)"
        try:
            public.verify(base64.b64decode(cp.signature, validate=True), cp.signed_bytes())
        except (InvalidSignature, binascii.Error, ValueError):
            return f"{cp.describe()}: the signature does not verify (forged or altered checkpoint)"
        return None


def load_public_keys(pem: bytes) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key in a PEM file (several may follow one another)."""
    keys = []
    for block in pem.split(b"-----END PUBLIC KEY-----")[:-1]:
        key = serialization.load_pem_public_key(block + b"-----END PUBLIC KEY-----\n")
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError("public key is not an Ed25519 key")
        keys.append(key)
    if not keys:
        raise ConfigError("no PEM public key found")
    return keys


def load_private_key(text: str) -> Ed25519PrivateKey:
    """A PKCS#8 PEM Ed25519 private key, or urlsafe base64 of its 32-byte seed."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ConfigError("the ledger signing key is not an Ed25519 key")
            return key
        seed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return Ed25519PrivateKey.from_private_bytes(seed)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ConfigError(
            "the ledger signing key must be an Ed25519 PKCS#8 PEM key or urlsafe base64 of a 32-byte seed"
        ) from exc


def private_pem(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def embedded_signing_key(home: Path) -> Ed25519PrivateKey:
    """The embedded default's signing key: created once in `home`, readable by its owner only."""
    path = home / SIGNING_KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name, then linked: a concurrent reader never sees half a key,
        # and when two processes race, the first link wins and both use its key.
        tmp = home / f".{SIGNING_KEY_FILE}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem(Ed25519PrivateKey.generate()))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return load_private_key(path.read_text())


def signer_from_settings(settings: Settings, dialect: str) -> Signer:
    """The checkpoint signer: the configured key, else (SQLite only) the embedded one in `home`."""
    if settings.ledger_signing_key is not None:
        return Signer(load_private_key(settings.ledger_signing_key.get_secret_value()))
    if settings.ledger_signing_key_file is not None:
        try:
            text = settings.ledger_signing_key_file.expanduser().read_text()
        except OSError as exc:
            raise ConfigError(f"QUOTAGATE_LEDGER_SIGNING_KEY_FILE: {exc}") from exc
        return Signer(load_private_key(text))
    if dialect == "sqlite":
        return Signer(embedded_signing_key(settings.home))
    raise ConfigError(
        "QUOTAGATE_LEDGER_SIGNING_KEY or QUOTAGATE_LEDGER_SIGNING_KEY_FILE is required with PostgreSQL: "
        "every gateway process must sign checkpoints with the same key"
    )


def read_checkpoints(path: Path) -> list[Checkpoint]:
    """Checkpoints from a JSON file, a JSON Lines file, or a directory of them (an anchor sink's)."""
    files = sorted(p for p in path.rglob("*") if p.suffix in {".json", ".jsonl"}) if path.is_dir() else [path]
    found: list[Checkpoint] = []
    for file in files:
        try:
            text = file.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read checkpoint file: {exc}") from exc
        try:
            try:
                docs = [json.loads(text)]
            except json.JSONDecodeError:  # JSON Lines: one checkpoint per line
                docs = [json.loads(line) for line in text.splitlines() if line.strip()]
            found.extend(Checkpoint.from_json(doc) for doc in docs)
        except ValueError as exc:
            raise ConfigError(f"{file}: {exc}") from exc
    return found
