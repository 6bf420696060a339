"""Exact money helpers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from quotagate.money import ceil_nanos, charge_nanos, format_units, nanos_from_units, to_decimal


def test_float_input_keeps_its_shortest_digits() -> None:
    assert to_decimal(0.075) == Decimal("0.075")
    assert to_decimal(4.5) == Decimal("4.5")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), True, "abc", None])
def test_non_amounts_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        to_decimal(bad)


def test_rounding() -> None:
    assert charge_nanos(Decimal("0.0000000015")) == 2  # half-up
    assert charge_nanos(Decimal("0.0000000014")) == 1
    assert ceil_nanos(Decimal("0.0000000010001")) == 2
    assert nanos_from_units(Decimal("1200")) == 1_200_000_000_000
    with pytest.raises(ValueError, match="9 decimal places"):
        nanos_from_units(Decimal("0.0000000001"))
    assert format_units(1_500_000, 6) == "0.001500"
