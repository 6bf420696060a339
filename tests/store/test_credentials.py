"""Stored provider keys on SQLite and PostgreSQL: a wrong master key, an altered ciphertext or one copied to
another provider's row is a clear error that names no secret (AES-GCM, the provider bound as associated data)."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from quotagate.apis import Provider
from quotagate.app import open_app
from quotagate.errors import ConfigError
from quotagate.secret_box import SecretBox, decode_master_key, new_master_key
from quotagate.store.credentials_repo import set_provider_key
from quotagate.store.snapshot_loader import load_snapshot
from quotagate.store.tables import ProviderCredential
from quotagate.upstream_keys import ProviderKeys

OPENAI_SECRET = "sk-openai-secret-0123456789abcdef"
ANTHROPIC_SECRET = "sk-ant-secret-fedcba9876543210"


@pytest.fixture
def stored(use_database: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both providers' keys stored under a known master key; returns that key."""
    master = new_master_key()
    monkeypatch.setenv("QUOTAGATE_MASTER_KEY", master)
    app = open_app()
    with app.db.transaction() as session:
        set_provider_key(session, app.secret_box(), Provider.OPENAI, OPENAI_SECRET, actor="test")
        set_provider_key(session, app.secret_box(), Provider.ANTHROPIC, ANTHROPIC_SECRET, actor="test")
    app.close()
    return master


def key_in_use(provider: Provider) -> str | None:
    app = open_app()
    try:
        with app.db.read() as session:
            snapshot = load_snapshot(session)
        return ProviderKeys(app.secret_box).key_for(snapshot.credentials[provider])
    finally:
        app.close()


def _set_ciphertext(provider: Provider, ciphertext: bytes) -> None:
    app = open_app()
    with app.db.transaction() as session:
        session.execute(
            update(ProviderCredential)
            .where(ProviderCredential.provider == provider.value)
            .values(ciphertext=ciphertext)
        )
    app.close()


def _ciphertext(provider: Provider) -> bytes:
    app = open_app()
    with app.db.read() as session:
        row = session.get_one(ProviderCredential, provider.value)
        assert row.ciphertext is not None
        sealed = row.ciphertext
    app.close()
    return sealed


def _refused(provider: Provider, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        key_in_use(provider)
    assert OPENAI_SECRET not in str(info.value) and ANTHROPIC_SECRET not in str(info.value)


DOES_NOT_DECRYPT = "stored credential for {} does not decrypt: the master key is not the one it was stored with"


def test_the_right_master_key_opens_each_providers_key(stored: str) -> None:
    assert key_in_use(Provider.OPENAI) == OPENAI_SECRET
    assert key_in_use(Provider.ANTHROPIC) == ANTHROPIC_SECRET


def test_a_wrong_master_key_is_a_clear_error(stored: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTAGATE_MASTER_KEY", new_master_key())
    _refused(Provider.OPENAI, DOES_NOT_DECRYPT.format("openai"))


def test_an_altered_ciphertext_is_a_clear_error(stored: str) -> None:
    sealed = _ciphertext(Provider.OPENAI)
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 0x01])
    _set_ciphertext(Provider.OPENAI, flipped)
    _refused(Provider.OPENAI, DOES_NOT_DECRYPT.format("openai"))
    _set_ciphertext(Provider.OPENAI, sealed[:20])
    _refused(Provider.OPENAI, "stored credential for openai is corrupt")
    _set_ciphertext(Provider.OPENAI, sealed)
    assert key_in_use(Provider.OPENAI) == OPENAI_SECRET


def test_a_ciphertext_copied_to_another_providers_row_does_not_open(stored: str) -> None:
    _set_ciphertext(Provider.ANTHROPIC, _ciphertext(Provider.OPENAI))
    _refused(Provider.ANTHROPIC, DOES_NOT_DECRYPT.format("anthropic"))
    assert key_in_use(Provider.OPENAI) == OPENAI_SECRET


def test_sealing_is_randomized_and_bound_to_the_provider() -> None:
    box = SecretBox(decode_master_key(new_master_key()))
    one, two = box.seal(OPENAI_SECRET, "openai"), box.seal(OPENAI_SECRET, "openai")
    assert one != two  # a fresh nonce each time: equal keys do not give equal ciphertexts
    assert OPENAI_SECRET.encode() not in one
    assert box.open(one, "openai") == box.open(two, "openai") == OPENAI_SECRET
    with pytest.raises(ConfigError, match="does not decrypt"):
        box.open(one, "anthropic")


def test_a_master_key_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="must decode to 32 bytes, got 16"):
        decode_master_key("A" * 22)
    with pytest.raises(ConfigError, match="urlsafe base64"):
        decode_master_key("A")  # one base64 character is no whole byte
