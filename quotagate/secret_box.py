"""Provider credentials at rest: AES-256-GCM under the master key; the provider name is bound as AAD."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from quotagate.errors import ConfigError

_NONCE = 12
_VERSION = b"\x01"


def decode_master_key(text: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("QUOTAGATE_MASTER_KEY must be urlsafe base64 of 32 bytes") from exc
    if len(key) != 32:
        raise ConfigError(f"QUOTAGATE_MASTER_KEY must decode to 32 bytes, got {len(key)}")
    return key


def new_master_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def embedded_master_key(home: Path) -> bytes:
    """The embedded default's master key: created once in `home`/master.key, readable by its owner only."""
    path = home / "master.key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_master_key() + "\n")
    return decode_master_key(path.read_text())


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, context: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def open(self, sealed: bytes, context: str) -> str:
        if not sealed.startswith(_VERSION) or len(sealed) < 1 + _NONCE + 16:
            raise ConfigError(f"stored credential for {context} is corrupt")
        nonce, body = sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :]
        try:
            return self._aead.decrypt(nonce, body, context.encode()).decode()
        except InvalidTag as exc:
            raise ConfigError(
                f"stored credential for {context} does not decrypt: the master key is not the one it was stored "
                "with, or the ciphertext was altered or copied from another provider"
            ) from exc
