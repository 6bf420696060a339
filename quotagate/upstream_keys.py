"""Provider credentials at use: `env:VAR` read from the environment, `stored` ones decrypted once per version."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping

from quotagate.apis import Provider
from quotagate.secret_box import SecretBox
from quotagate.snapshot import CredentialRef

ANTHROPIC_VERSION = "2023-06-01"
# The client's anthropic-version is forwarded as Check's own header: only a plain token, never CR/LF or NUL.
_VERSION_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ProviderKeys:
    def __init__(self, box: Callable[[], SecretBox], environ: Mapping[str, str] = os.environ) -> None:
        self._box = box
        self._environ = environ
        self._decrypted: dict[tuple[Provider, int], str] = {}

    def key_for(self, ref: CredentialRef | None) -> str | None:
        if ref is None:
            return None
        if ref.source == "env":
            return self._environ.get(ref.env_var or "") or None
        if ref.ciphertext is None:
            return None
        cache_key = (ref.provider, ref.version)
        key = self._decrypted.get(cache_key)
        if key is None:
            key = self._box().open(ref.ciphertext, ref.provider.value)
            # A rotation bumps the version: drop older plaintexts of this provider.
            self._decrypted = {k: v for k, v in self._decrypted.items() if k[0] != ref.provider}
            self._decrypted[cache_key] = key
        return key


def credential_headers(provider: Provider, key: str, request_headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Headers that authenticate to the provider (set, overwriting whatever the client sent)."""
    if provider is Provider.ANTHROPIC:
        asked = request_headers.get("anthropic-version") or ""
        version = asked if _VERSION_TOKEN.fullmatch(asked) else ANTHROPIC_VERSION
        return (("x-api-key", key), ("anthropic-version", version))
    return (("authorization", f"Bearer {key}"),)
