"""What a limit decision is made of, independent of the counter backend.

Semantics, identical in every backend (the shared contract tests prove it):

* **RPM**: fixed one-minute windows (``floor(now / 60)``). Admission adds 1; never refunded.
* **TPM**: fixed one-minute windows. Admission adds the estimated tokens to the admission window;
  settlement adds ``actual - reserved`` to that same window (if it still exists).
* **Monthly spend**: one counter per calendar month key (``"2026-11"``), in nanos. Admission adds the
  worst-case cost; settlement adds ``actual - reserved``. Admission is refused when
  ``spent + cost > limit``: a hard cap is never exceeded while estimates are upper bounds.
* **Prepaid credits**: a balance per scope, in nanos, with no window. Admission subtracts the worst-case
  cost and is refused when ``balance < cost``; settlement gives back ``reserved - actual``. Credits are
  added with ``add_credits``.
* **All or nothing**: every *enforced* check passes or nothing is counted. *Monitor* checks are
  evaluated (and reported when they would deny) and always counted, never deny.
* Spend and credit counters must survive a counter-backend restart: when absent they are seeded from
  the durable store through :class:`BaselineSource`, then the decision is retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class LimitKind(StrEnum):
    RPM = "rpm"
    TPM = "tpm"
    SPEND = "spend"
    CREDITS = "credits"


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One quota's limits, applied to one request. ``counter_id`` names its counters (unique per quota)."""

    counter_id: str
    enforce: bool = True
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    spend_limit_nanos: int | None = None
    prepaid: bool = False  # the request must be covered by the credit balance of `credit_id`
    credit_id: str | None = None  # the scope whose prepaid balance pays (e.g. "project:<id>")


@dataclass(frozen=True, slots=True)
class ReservationRequest:
    org_id: str  # every counter of one decision shares this org (Redis hash tag)
    reservation_id: str
    checks: tuple[LimitCheck, ...]
    tokens: int  # estimated tokens: prompt estimate + max output
    cost_nanos: int  # worst-case cost
    now: float  # epoch seconds (injected, so window edges are deterministic in tests)
    month: str  # calendar month key of `now` in the spend time zone, e.g. "2026-11"
    ttl_s: int  # after this, an unsettled reservation is swept (unless its meter extends it)
    note: str = ""  # opaque, kept with the reservation and returned by expired(): what the sweeper needs to charge it


@dataclass(frozen=True, slots=True)
class Denial:
    counter_id: str
    kind: LimitKind
    limit: int  # the configured limit (requests, tokens, nanos)
    remaining: int  # what was left before this request
    retry_after_s: int | None  # RPM/TPM: seconds to the next window; spend/credits: None
    enforce: bool


@dataclass(frozen=True, slots=True)
class Remaining:
    """Headroom after this request, for x-ratelimit-* headers (None: no such limit on this check)."""

    counter_id: str
    rpm_limit: int | None = None
    rpm_remaining: int | None = None
    tpm_limit: int | None = None
    tpm_remaining: int | None = None
    spend_remaining_nanos: int | None = None
    credit_balance_nanos: int | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    denial: Denial | None = None  # the first enforced check that refused
    monitored: tuple[Denial, ...] = ()  # monitor checks that would have refused
    remaining: tuple[Remaining, ...] = ()
    window_reset_s: int = 60  # seconds to the end of the current minute window


@dataclass(frozen=True, slots=True)
class Admission:
    """Where a request was counted: its checks, its admission time (minute window) and spend month. A settlement
    carries it so that actual figures still land when the backend lost the reservation (see ``Counters.settle``)."""

    checks: tuple[LimitCheck, ...]
    now: float
    month: str


@dataclass(frozen=True, slots=True)
class Settlement:
    reservation_id: str
    org_id: str
    tokens: int  # actual tokens (all classes)
    cost_nanos: int  # actual charged cost
    admission: Admission | None = None  # None: a reservation that is gone is left alone (the sweeper's settle)
    # The sweeper's estimate for a request whose response nobody saw: a later real settlement corrects it once.
    provisional: bool = False


@dataclass(frozen=True, slots=True)
class ExpiredReservation:
    reservation_id: str
    org_id: str
    tokens: int
    cost_nanos: int
    created_at: float
    note: str = ""  # the note of its ReservationRequest


@dataclass(frozen=True, slots=True)
class CounterState:
    """Current figures of one check's counters (balance endpoint, reports, tests)."""

    counter_id: str
    requests_this_minute: int = 0
    tokens_this_minute: int = 0
    spend_this_month_nanos: int = 0
    credit_balance_nanos: int | None = None


@dataclass(frozen=True)
class Baseline:
    spend_nanos: Mapping[str, int] = field(default_factory=dict)  # counter_id -> spend this month
    credit_nanos: Mapping[str, int] = field(default_factory=dict)  # credit_id -> balance
    # credit_id -> highest ledger sequence number of the credits included in credit_nanos, so a credit
    # that the seed already contains is not added a second time by add_credits (see Counters.add_credits).
    credit_watermark: Mapping[str, int] = field(default_factory=dict)


class BaselineSource(Protocol):
    """Durable figures to seed spend and credit counters that a backend does not have (fresh start, Redis restart)."""

    async def baseline(self, org_id: str, spend_ids: list[str], credit_ids: list[str], month: str) -> Baseline: ...


class Counters(Protocol):
    """A counter backend. In-process (embedded default) and Redis (scale-out) have identical semantics."""

    async def reserve(self, request: ReservationRequest) -> Decision:
        """Check every check and reserve all or nothing. Raises BackendUnavailable if the backend is unreachable
        or slower than the configured timeout (the caller fails closed)."""
        ...

    async def settle(self, settlement: Settlement) -> bool:
        """Replace the reservation with actual figures. Idempotent: False if it was already settled or swept.

        A reservation can also be *lost*: the backend lost its data (Redis restarted without persistence, or
        evicted the key) while the request was in flight, and the re-seeded counters do not contain it. When the
        settlement carries its ``admission``, a reservation that is neither outstanding nor settled before is
        counted as lost: the actual tokens go to the TPM windows of the admission minute that exist, the actual
        cost to the spend counters of the month and out of the credit balances (seeded first when missing, like
        ``reserve``), and False is returned. Settling a reservation that ``expired()`` claimed leaves a marker for
        the rest of the reservation's lifetime, so a late settlement of a swept request is never counted twice.

        A ``provisional`` settlement (the sweeper's estimate: nobody saw the response) leaves a marker holding its
        figures instead: the first later settlement that is not provisional (the real figures arrived after all)
        replaces them, adding ``actual - provisional`` to the same counters, and returns True; any settlement after
        that is ignored. A provisional settlement of a reservation settled before does nothing."""
        ...

    async def extend(self, org_id: str, reservation_id: str, expires_at: float) -> bool:
        """Move an outstanding reservation's expiry to ``expires_at`` (never earlier): its request is still being
        metered (a long stream), so it must not be swept. False, changing nothing, when the reservation is not
        outstanding or ``expired()`` has already claimed it."""
        ...

    async def expired(self, now: float, limit: int = 1000) -> list[ExpiredReservation]:
        """Claim reservations past their expiry (each returned once, across all processes); the caller settles
        them as estimated and records the sweep."""
        ...

    async def add_credits(self, org_id: str, credit_id: str, nanos: int, seq: int) -> int | None:
        """Apply a credit (negative: a removal) already committed to the durable ledger with sequence `seq`.

        If the balance counter is not seeded yet, do nothing and return None (the seed will read the
        credit from the ledger). If it is seeded and `seq` is above its watermark, add `nanos` and raise
        the watermark to `seq`; otherwise (already included) do nothing. Returns the balance."""
        ...

    async def state(
        self, org_id: str, checks: tuple[LimitCheck, ...], now: float, month: str
    ) -> list[CounterState]: ...

    async def close(self) -> None: ...
