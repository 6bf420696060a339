"""Exact prices: each token class times its own rate, times the model multiplier, charged to the nano.

Worst cases (for reservations) are upper bounds: every input token at the dearest input-class rate and
the full output allowance at the output rate, rounded up.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from quotagate.money import TOKENS_PER_PRICE_UNIT, ceil_nanos, charge_nanos
from quotagate.snapshot import Price
from quotagate.usage.model import Usage

_MILLION = Decimal(TOKENS_PER_PRICE_UNIT)


@dataclass(frozen=True, slots=True)
class Cost:
    """Exact per-class amounts (currency units, unrounded) and the charged total in nanos."""

    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    output: Decimal
    total_nanos: int
    unit: str
    rate_card_version: str

    @property
    def exact_total(self) -> Decimal:
        return self.input + self.cached_input + self.cache_write + self.output


def cache_read_rate(price: Price) -> Decimal:
    # Without a cache price, cached tokens cost what uncached ones do (never less than billed).
    return price.cache_read if price.cache_read is not None else price.input


def cache_write_rate(price: Price) -> Decimal:
    return price.cache_write if price.cache_write is not None else price.input


def cost_of(usage: Usage, price: Price) -> Cost:
    m = price.multiplier
    parts = (
        Decimal(usage.input_tokens) * price.input * m / _MILLION,
        Decimal(usage.cached_input_tokens) * cache_read_rate(price) * m / _MILLION,
        Decimal(usage.cache_write_tokens) * cache_write_rate(price) * m / _MILLION,
        Decimal(usage.output_tokens) * price.output * m / _MILLION,
    )
    return Cost(
        *parts, total_nanos=charge_nanos(sum(parts, Decimal(0))), unit=price.unit, rate_card_version=price.version
    )


def worst_case_nanos(price: Price, input_tokens: int, output_tokens: int) -> int:
    dearest_input = max(price.input, cache_read_rate(price), cache_write_rate(price))
    exact = (Decimal(input_tokens) * dearest_input + Decimal(output_tokens) * price.output) * price.multiplier
    return ceil_nanos(exact / _MILLION)
