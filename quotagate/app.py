"""The composition root: builds the core's collaborators from settings, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from quotagate.errors import ConfigError
from quotagate.identity.credentials import SecretHasher
from quotagate.secret_box import SecretBox, decode_master_key, embedded_master_key
from quotagate.settings import Settings, load_settings
from quotagate.store.database import Database
from quotagate.store.factory import open_database


@dataclass
class App:
    settings: Settings
    db: Database
    hasher: SecretHasher
    _box: SecretBox | None = field(default=None, repr=False)

    def secret_box(self) -> SecretBox:
        """The cipher for stored provider credentials (created lazily: env-only deployments need no key)."""
        if self._box is None:
            if self.settings.master_key is not None:
                key = decode_master_key(self.settings.master_key.get_secret_value())
            elif self.db.dialect == "sqlite":
                key = embedded_master_key(self.settings.home)
            else:
                raise ConfigError("QUOTAGATE_MASTER_KEY is required to store credentials in PostgreSQL")
            self._box = SecretBox(key)
        return self._box

    def close(self) -> None:
        self.db.close()


def open_app(settings: Settings | None = None) -> App:
    settings = settings or load_settings()
    pepper = settings.key_pepper.get_secret_value().encode() if settings.key_pepper else None
    return App(settings=settings, db=open_database(settings), hasher=SecretHasher(pepper))
