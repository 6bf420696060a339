"""Money in responses: integer nanos (exact) beside decimal strings (exact, never a binary float)."""

from __future__ import annotations

from decimal import Decimal

from quotagate.money import NANOS_PER_CENT, units


def amount(nanos: int) -> str:
    """Currency units, shortest exact form: 12_500_000 -> '0.0125'."""
    return _plain(units(nanos))


def cents(nanos: int) -> str:
    """Cents, shortest exact form: 3_402_000_000_00 -> '34020', 12_345 -> '0.0012345'."""
    return _plain(Decimal(nanos) / NANOS_PER_CENT)


def _plain(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
