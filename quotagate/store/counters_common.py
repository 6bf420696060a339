"""Window math, validation and decision building shared by both counter backends, so they cannot drift.

Both backends read the *before* figures of every check's counters, decide, and build the
:class:`~quotagate.limits.model.Decision` with :func:`build_decision` from those figures (the Redis
Lua script makes the same comparisons atomically; the contract tests prove both agree).

Decisions where ``quotagate/limits/model.py`` leaves room (the same in both backends):

* A check counts only the limits it has: requests when ``rpm_limit`` is set, tokens when ``tpm_limit``
  is set, spend when ``spend_limit_nanos`` is set, credits when ``prepaid``. ``state()`` reports 0 for
  counters a check does not keep.
* Checks that pay from the same ``credit_id`` charge it once per request (one balance, one cost).
* ``denial`` is the first refusal of an enforced check, in check order and, within a check, RPM, TPM,
  spend, credits. ``monitored`` lists every refusal of every monitor check (one per kind), also when the
  decision is denied. ``Denial.remaining`` is clamped at 0. For credits, ``Denial.limit`` and
  ``Denial.remaining`` are the balance before the request (there is no configured limit).
* ``Remaining`` is the headroom after this request (nothing is counted when it is denied), clamped at 0;
  ``credit_balance_nanos`` is the balance itself and may be negative after a top-up.
* ``retry_after_s`` (RPM/TPM) and ``window_reset_s`` are whole seconds to the next minute, 1..60.
* Amounts, limits and sequence numbers are integers with magnitude below 2**53 (Redis Lua numbers are
  doubles); tokens and costs are >= 0; ``counter_id`` is unique within a request; a prepaid check names its
  ``credit_id``; a reservation id is unique per organization while outstanding. Otherwise ``ValueError``.
* ``settle`` adjusts only counters that still exist: a window or month counter that has expired is not
  re-created with a partial figure (it would then look seeded).
* ``expired()`` claims a reservation by taking it off the expiry index, so it is returned once across all
  processes; the reservation itself stays for the caller's ``settle`` (recorded or estimated figures), which
  then works once like any other. Until settled, the counters hold the reserved worst case; a reservation
  still outstanding (claimed or not) keeps its id.
* ``extend`` only moves an expiry later, and only of an outstanding reservation nobody claimed; Redis lengthens the
  reservation hash's lifetime by the same amount, so it still outlives its expiry by ``RESERVATION_MARGIN_S``.
* A provisional (sweeper's) settlement of a reservation leaves a marker with its figures and counter keys for the
  rest of the reservation's lifetime; the first real settlement within it applies ``real - provisional``. After
  the marker is gone, a late settlement is a lost one (counted only when it carries its admission).
* A lost reservation (``Counters.settle``) is recognized by its absence: neither outstanding nor marked as a
  settled claim. Its TPM window is the admission minute's, adjusted only if it exists (like a settlement); spend
  and credit counters are seeded when missing, then charged the actual cost as if 0 had been reserved. A
  reservation removed only by its Redis TTL (no sweeper ran for ``ttl_s`` + an hour) is indistinguishable from a
  lost one: its late settlement counts the actual cost on top of the worst case it still holds (over-counting,
  never under-counting).
* ``state()`` seeds missing spend and credit counters, like ``reserve`` (a balance endpoint after a
  restart shows the durable figures, not 0).
* Credit watermarks default to 0; ``add_credits`` needs ``seq >= 1``.
* ``add_credits`` on an unseeded balance returns None and leaves no balance, as specified, but remembers the
  credit as *pending* for a day: a seed whose ledger read started before the credit was committed and whose
  write lands after it would otherwise miss the credit. The seed applies pending credits above its
  watermark, so a credit the seed already includes is still never counted twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from functools import lru_cache
from math import ceil

from quotagate.limits.model import (
    Baseline,
    Decision,
    Denial,
    LimitCheck,
    LimitKind,
    Remaining,
    ReservationRequest,
)

WINDOW_S = 60
WINDOW_TTL_S = 120  # a minute window outlives its minute so late settlements still land in it
MONTH_MARGIN_S = 3 * 86400  # month counters outlive the month end: late settlements, any spend time zone
RESERVATION_MARGIN_S = 3600  # garbage collection of reservations no sweeper claimed, long after ttl_s
PENDING_CREDIT_TTL_S = 86400  # far longer than any seed's read-to-write time
SEED_ATTEMPTS = 4  # decision attempts when counters need seeding (each seed is followed by a retry)
MAX_AMOUNT = 2**53 - 1  # exact in a double, so the Lua comparisons are exact

RPM, TPM, SPEND, CREDITS = LimitKind.RPM, LimitKind.TPM, LimitKind.SPEND, LimitKind.CREDITS

# Figures of one check before the request: requests and tokens this minute, spend this month, credit balance.
Figures = tuple[int, int, int, int]


def minute_of(now: float) -> int:
    return int(now // WINDOW_S)


def reset_after(now: float, minute: int) -> int:
    """Whole seconds from ``now`` to the end of its minute window (1..60)."""
    return ceil((minute + 1) * WINDOW_S - now)


@lru_cache(maxsize=64)
def _month_end(month: str) -> float:
    try:
        year, mon = (int(part) for part in month.split("-"))
        if not 1 <= mon <= 12:
            raise ValueError(month)
        start_next = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"month must look like '2026-11', not {month!r}") from exc
    return start_next.timestamp()


def month_ttl_s(month: str, now: float) -> int:
    """Lifetime of a month's spend counter seeded at ``now``: to the month's end (UTC) plus a margin."""
    return max(0, ceil(_month_end(month) - now)) + MONTH_MARGIN_S


def _amount(name: str, value: int, low: int = 0) -> None:
    if not low <= value <= MAX_AMOUNT:
        raise ValueError(f"{name} must be an integer in [{low}, 2**53), got {value!r}")


def validate_request(request: ReservationRequest) -> None:
    """Reject what the backends cannot count exactly; cheap enough for the hot path."""
    if not 0 <= request.tokens <= MAX_AMOUNT or not 0 <= request.cost_nanos <= MAX_AMOUNT:
        _amount("tokens", request.tokens)
        _amount("cost_nanos", request.cost_nanos)
    if request.ttl_s < 1:
        raise ValueError(f"ttl_s must be >= 1, got {request.ttl_s}")
    _month_end(request.month)  # cached: a malformed month fails here, before anything is counted
    checks = request.checks
    if len(checks) > 1 and len({check.counter_id for check in checks}) < len(checks):
        raise ValueError(f"a counter_id appears twice in one request: {[c.counter_id for c in checks]}")
    for check in checks:
        rpm, tpm, cap = check.rpm_limit, check.tpm_limit, check.spend_limit_nanos
        if (
            (rpm is not None and not 0 <= rpm <= MAX_AMOUNT)
            or (tpm is not None and not 0 <= tpm <= MAX_AMOUNT)
            or (cap is not None and not 0 <= cap <= MAX_AMOUNT)
        ):
            raise ValueError(f"limits of {check.counter_id!r} must be integers in [0, 2**53): {check}")
        if check.prepaid and not check.credit_id:
            raise ValueError(f"prepaid check {check.counter_id!r} has no credit_id")


def validate_settlement(tokens: int, cost_nanos: int) -> None:
    _amount("tokens", tokens)
    _amount("cost_nanos", cost_nanos)


def validate_credit(nanos: int, seq: int) -> None:
    _amount("credit nanos", nanos, -MAX_AMOUNT)
    _amount("credit seq", seq, 1)


def refusals(check: LimitCheck, figures: Figures, tokens: int, cost: int, retry_after: int) -> list[Denial]:
    """Every limit of ``check`` this request would exceed (same comparisons as the Lua script)."""
    requests, used_tokens, spent, balance = figures
    out: list[Denial] = []
    cid, enforce = check.counter_id, check.enforce
    limit = check.rpm_limit
    if limit is not None and requests >= limit:
        out.append(Denial(cid, RPM, limit, max(0, limit - requests), retry_after, enforce))
    limit = check.tpm_limit
    if limit is not None and tokens > limit - used_tokens:
        out.append(Denial(cid, TPM, limit, max(0, limit - used_tokens), retry_after, enforce))
    limit = check.spend_limit_nanos
    if limit is not None and cost > limit - spent:
        out.append(Denial(cid, SPEND, limit, max(0, limit - spent), None, enforce))
    if check.prepaid and balance < cost:
        left = max(0, balance)
        out.append(Denial(cid, CREDITS, left, left, None, enforce))
    return out


# The generated ``__init__`` of a frozen dataclass pays an ``object.__setattr__`` per field; on the hot path
# (one ``Remaining`` per check per request) storing the slots directly halves the cost. The field lists are
# checked at import, so a change to the model fails loudly instead of leaving a slot unset.
_REMAINING_FIELDS = (
    "counter_id",
    "rpm_limit",
    "rpm_remaining",
    "tpm_limit",
    "tpm_remaining",
    "spend_remaining_nanos",
    "credit_balance_nanos",
)
_DECISION_FIELDS = ("allowed", "denial", "monitored", "remaining", "window_reset_s")
for _cls, _names in ((Remaining, _REMAINING_FIELDS), (Decision, _DECISION_FIELDS)):
    if tuple(f.name for f in fields(_cls)) != _names:
        raise RuntimeError(f"{_cls.__name__} changed: update the fast constructors in {__name__}")
_r0, _r1, _r2, _r3, _r4, _r5, _r6 = (getattr(Remaining, name).__set__ for name in _REMAINING_FIELDS)
_d0, _d1, _d2, _d3, _d4 = (getattr(Decision, name).__set__ for name in _DECISION_FIELDS)
_new = object.__new__


def _remaining(
    cid: str,
    rpm: int | None,
    rpm_left: int | None,
    tpm: int | None,
    tpm_left: int | None,
    spend_left: int | None,
    balance: int | None,
) -> Remaining:
    obj: Remaining = _new(Remaining)
    _r0(obj, cid)
    _r1(obj, rpm)
    _r2(obj, rpm_left)
    _r3(obj, tpm)
    _r4(obj, tpm_left)
    _r5(obj, spend_left)
    _r6(obj, balance)
    return obj


def _decision(
    allowed: bool, denial: Denial | None, monitored: tuple[Denial, ...], remaining: tuple[Remaining, ...], reset: int
) -> Decision:
    obj: Decision = _new(Decision)
    _d0(obj, allowed)
    _d1(obj, denial)
    _d2(obj, monitored)
    _d3(obj, remaining)
    _d4(obj, reset)
    return obj


def build_decision(request: ReservationRequest, figures: Sequence[Figures], minute: int) -> Decision:
    """The decision for ``request`` given each check's figures before it; counts are added only if allowed.

    One pass computes the headroom as if admitted (a negative headroom is a refusal); the rare denial
    recomputes it without this request's counts."""
    tokens, cost = request.tokens, request.cost_nanos
    denial: Denial | None = None
    monitored: list[Denial] = []
    remaining: list[Remaining] = []
    reset = 0
    for check, figs in zip(request.checks, figures, strict=True):
        requests, used_tokens, spent, balance = figs
        rpm, tpm, cap = check.rpm_limit, check.tpm_limit, check.spend_limit_nanos
        rpm_left = tpm_left = spend_left = credit = None
        refused = False
        if rpm is not None:
            rpm_left = rpm - requests - 1
            if rpm_left < 0:
                rpm_left, refused = 0, True
        if tpm is not None:
            tpm_left = tpm - used_tokens - tokens
            if tpm_left < 0:
                tpm_left, refused = 0, True
        if cap is not None:
            spend_left = cap - spent - cost
            if spend_left < 0:
                spend_left, refused = 0, True
        if check.prepaid:
            credit = balance - cost
            if credit < 0:
                refused = True
        if refused:
            reset = reset or reset_after(request.now, minute)
            found = refusals(check, figs, tokens, cost, reset)
            if not check.enforce:
                monitored.extend(found)
            elif denial is None:
                denial = found[0]
        remaining.append(_remaining(check.counter_id, rpm, rpm_left, tpm, tpm_left, spend_left, credit))
    if denial is not None:
        remaining = [_headroom(check, figs) for check, figs in zip(request.checks, figures, strict=True)]
    return _decision(
        denial is None, denial, tuple(monitored), tuple(remaining), reset or reset_after(request.now, minute)
    )


def _headroom(check: LimitCheck, figures: Figures) -> Remaining:
    """Headroom of a check when nothing was counted (the request was denied)."""
    requests, used_tokens, spent, balance = figures
    rpm, tpm, cap = check.rpm_limit, check.tpm_limit, check.spend_limit_nanos
    return _remaining(
        check.counter_id,
        rpm,
        None if rpm is None else max(0, rpm - requests),
        tpm,
        None if tpm is None else max(0, tpm - used_tokens),
        None if cap is None else max(0, cap - spent),
        balance if check.prepaid else None,
    )


def seeded_credit(baseline: Baseline, credit_id: str, pending: dict[int, int] | None) -> tuple[int, int]:
    """Balance and watermark of a credit counter seeded from ``baseline`` plus credits added while unseeded."""
    balance = int(baseline.credit_nanos.get(credit_id, 0))
    mark = int(baseline.credit_watermark.get(credit_id, 0))
    top = mark
    for seq, nanos in (pending or {}).items():
        if seq > mark:  # a credit the ledger read did not include yet
            balance += nanos
            top = max(top, seq)
    return balance, top


class SingleFlight:
    """At most one seed per key at a time in this process, and none for a caller whose "needs seeding" answer
    predates a seed that has since completed: a cold start or a Redis restart under load would otherwise send
    every concurrent request's baseline read to the durable store."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Future[None]] = {}
        self._done: dict[Hashable, float] = {}  # key -> when its last seed completed (monotonic)

    @staticmethod
    def now() -> float:
        return time.monotonic()

    async def run(self, key: Hashable, seed: Callable[[], Awaitable[None]], since: float) -> None:
        """Seed under ``key`` unless a seed completed after ``since`` (when the caller read the counters) or one
        is running (then wait for it). Either way the caller reads again; if that seed failed, its own next
        attempt seeds and sees the error itself."""
        done = self._done.get(key)
        if done is not None and done >= since:
            return
        flight = self._flights.get(key)
        if flight is not None:
            await asyncio.shield(flight)
            return
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            await seed()
            finished = self.now()
            if len(self._done) > 4096:  # keep it small: only recent completions matter
                self._done = {k: t for k, t in self._done.items() if t > finished - 60}
            self._done[key] = finished
        finally:
            del self._flights[key]
            flight.set_result(None)
