"""Rate card metadata the model listing shows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from quotagate.store.tables import RateCard


def rate_card_created(session: Session, version: str) -> datetime | None:
    card = session.get(RateCard, version)
    return card.created_at if card else None
