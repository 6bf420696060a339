"""The single config-state row: version counter (polled by every process), active rate card, deployment."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from quotagate.store.tables import ConfigState


def get_config_state(session: Session) -> ConfigState:
    state = session.get(ConfigState, 1)
    if state is None:
        state = ConfigState(id=1, version=0, deployment={}, updated_at=datetime.now(UTC))
        session.add(state)
        session.flush()
    return state


def bump_config_version(session: Session, now: datetime | None = None) -> int:
    """Mark the configuration changed; processes reload their snapshot on their next poll."""
    state = get_config_state(session)
    state.version = (state.version or 0) + 1
    state.updated_at = now or datetime.now(UTC)
    return state.version


def read_config_version(session: Session) -> int:
    version = session.scalar(select(ConfigState.version).where(ConfigState.id == 1))
    return int(version or 0)
