"""Exact money.

Amounts are integer *nanos* (10^-9 of the currency unit) everywhere they are stored or counted: SQL
``BIGINT``, Redis ``INCRBY``, in-process ``int``. Prices are ``Decimal`` per 1M tokens as written in
the manifest. A request's cost is computed exactly as a ``Decimal`` and charged rounded half-up to a
whole nano, once per request, so report totals, ledger debits and counters are sums of the same
integers and agree to the last digit. (Redis Lua numbers are doubles, exact to 2^53 nanos: about
9 million currency units per counter window.)
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation

NANOS_PER_UNIT = 1_000_000_000
NANOS_PER_CENT = NANOS_PER_UNIT // 100
TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are per 1M tokens
MAX_NANOS = 2**53  # exact in a Redis Lua number


def to_decimal(value: object) -> Decimal:
    """A Decimal from a manifest/API number without passing through a binary float's digits."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise ValueError("a boolean is not an amount")
    elif isinstance(value, int | str):
        try:
            result = Decimal(value)
        except InvalidOperation as exc:
            raise ValueError(f"not a decimal number: {value!r}") from exc
    elif isinstance(value, float):
        result = Decimal(repr(value))  # shortest repr: 0.075 -> Decimal('0.075'), not 0.07499999...
    else:
        raise ValueError(f"not a number: {value!r}")
    if not result.is_finite():
        raise ValueError(f"not a finite number: {value!r}")
    return result


def nanos_from_units(amount: Decimal) -> int:
    """Currency units -> nanos; the amount must be a whole number of nanos."""
    scaled = amount * NANOS_PER_UNIT
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more than 9 decimal places")
    return int(scaled)


def charge_nanos(exact_cost: Decimal) -> int:
    """The charged amount of an exact cost: rounded half-up to a whole nano."""
    return int((exact_cost * NANOS_PER_UNIT).to_integral_value(rounding=ROUND_HALF_UP))


def ceil_nanos(exact_cost: Decimal) -> int:
    """An upper bound in nanos (worst-case reservations round up, never down)."""
    return int((exact_cost * NANOS_PER_UNIT).to_integral_value(rounding=ROUND_CEILING))


def format_units(nanos: int, places: int = 9) -> str:
    """Nanos as a decimal string of currency units, e.g. 1_500_000 -> '0.001500000'."""
    value = Decimal(nanos) / NANOS_PER_UNIT
    return f"{value:.{places}f}"


def units(nanos: int) -> Decimal:
    return Decimal(nanos) / NANOS_PER_UNIT
