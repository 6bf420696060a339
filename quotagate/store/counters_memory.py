"""In-process counters: the embedded default (one process, asyncio).

Semantics are those of ``quotagate/limits/model.py`` plus the decisions listed in
:mod:`quotagate.store.counters_common`; the Redis backend has the same (one contract suite runs both).

A decision is atomic because nothing between reading the figures and counting awaits: the event loop runs
no other coroutine in between. The only await is the baseline read that seeds missing spend and credit
counters, after which the whole decision is re-evaluated.

Memory stays bounded the way Redis TTLs bound it there, measured on the injected ``clock`` (real time): a
minute's counters are dropped ``WINDOW_TTL_S`` after their last admission, a month's spend counters a few days
after the month ends, pending credits after a day. Reservations stay until settled (the sweeper, in this same
process, settles what :meth:`MemoryCounters.expired` claims; Redis's reservation TTL only exists for
reservations no sweeper ever settles).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from quotagate.errors import BackendUnavailable
from quotagate.limits.model import (
    Admission,
    BaselineSource,
    CounterState,
    Decision,
    ExpiredReservation,
    LimitCheck,
    ReservationRequest,
    Settlement,
)
from quotagate.store.counters_common import (
    PENDING_CREDIT_TTL_S,
    RESERVATION_MARGIN_S,
    SEED_ATTEMPTS,
    WINDOW_TTL_S,
    Figures,
    SingleFlight,
    build_decision,
    minute_of,
    month_ttl_s,
    seeded_credit,
    validate_credit,
    validate_request,
    validate_settlement,
)

PRUNE_EVERY_S = 5.0

Key = tuple[str, str]  # (org_id, counter_id or credit_id or reservation_id)


class _Bucket:
    """The counters of one minute window or one month, dropped together once ``deadline`` passes."""

    __slots__ = ("counts", "deadline")

    def __init__(self) -> None:
        self.counts: dict[Key, list[int]] = {}  # minute: [requests, tokens]; month: [spend]
        self.deadline = 0.0


class _Pending:
    __slots__ = ("credits", "deadline")

    def __init__(self) -> None:
        self.credits: dict[int, int] = {}  # seq -> nanos
        self.deadline = 0.0


class _Reservation:
    __slots__ = (
        "cost",
        "created_at",
        "credit_ids",
        "expires_at",
        "minute",
        "month",
        "note",
        "spend_ids",
        "tokens",
        "tpm_ids",
    )

    def __init__(
        self,
        tokens: int,
        cost: int,
        created_at: float,
        expires_at: float,
        minute: int,
        month: str,
        tpm_ids: list[str],
        spend_ids: list[str],
        credit_ids: list[str],
        note: str = "",
    ) -> None:
        self.tokens = tokens
        self.cost = cost
        self.created_at = created_at
        self.expires_at = expires_at
        self.minute = minute
        self.month = month
        self.tpm_ids = tpm_ids
        self.spend_ids = spend_ids
        self.credit_ids = credit_ids
        self.note = note


_NO_COUNTS: dict[Key, list[int]] = {}


class MemoryCounters:
    """The :class:`~quotagate.limits.model.Counters` of one process."""

    def __init__(self, baseline: BaselineSource, *, clock: Callable[[], float] = time.time) -> None:
        self._baseline = baseline
        self._clock = clock
        self._minutes: dict[int, _Bucket] = {}
        self._months: dict[str, _Bucket] = {}
        self._credits: dict[Key, list[int]] = {}  # [balance, watermark]
        self._pending: dict[Key, _Pending] = {}
        self._reservations: dict[Key, _Reservation] = {}
        self._claimed: set[Key] = set()  # outstanding reservations expired() returned
        self._settled_claims: dict[Key, float] = {}  # settled claims -> when their marker goes (Redis: the TTL)
        # provisionally settled (swept) reservations -> (their provisional figures and counters, when the marker goes)
        self._provisional: dict[Key, tuple[_Reservation, float]] = {}
        # Expiry index: reservations bucketed by whole second of expiry, plus a heap of those seconds.
        self._due: dict[int, dict[Key, None]] = {}
        self._due_heap: list[int] = []
        self._flights = SingleFlight()
        self._next_prune = 0.0

    async def connect(self) -> None:
        """Nothing to connect; here so both backends start the same way."""

    async def ping(self) -> None:
        """Always healthy (same shape as :meth:`RedisCounters.ping`)."""

    async def reserve(self, request: ReservationRequest) -> Decision:
        validate_request(request)
        org, checks, month = request.org_id, request.checks, request.month
        clock = self._clock()
        if clock >= self._next_prune:
            self._prune(clock)
        minute = minute_of(request.now)
        for _ in range(SEED_ATTEMPTS):
            since = self._flights.now()
            figures = self._figures(org, checks, minute, month)
            if figures is not None:
                break
            spend_ids, credit_ids = self._unseeded(org, checks, month)
            await self._seed(org, month, request.now, spend_ids, credit_ids, since)
        else:
            raise BackendUnavailable(f"counters of {org!r} vanished while being seeded {SEED_ATTEMPTS} times")
        # Nothing awaited since the figures were read: reading, deciding and counting are one atomic step.
        if (org, request.reservation_id) in self._reservations:
            raise ValueError(f"reservation {request.reservation_id!r} of {org!r} is already outstanding")
        decision = build_decision(request, figures, minute)
        if decision.allowed:
            self._count(request, minute, clock)
        return decision

    def _figures(self, org: str, checks: tuple[LimitCheck, ...], minute: int, month: str) -> list[Figures] | None:
        """Each check's figures before the request, or None when a spend or credit counter needs seeding."""
        window = self._minutes.get(minute)
        wcounts = window.counts if window is not None else _NO_COUNTS
        bucket = self._months.get(month)
        mcounts = bucket.counts if bucket is not None else _NO_COUNTS
        credits = self._credits
        figures: list[Figures] = []
        for check in checks:
            cid = check.counter_id
            requests = tokens = spent = balance = 0
            if check.rpm_limit is not None or check.tpm_limit is not None:
                w = wcounts.get((org, cid))
                if w is not None:
                    requests, tokens = w
            if check.spend_limit_nanos is not None:
                s = mcounts.get((org, cid))
                if s is None:
                    return None
                spent = s[0]
            if check.prepaid:
                c = credits.get((org, check.credit_id or ""))
                if c is None:
                    return None
                balance = c[0]
            figures.append((requests, tokens, spent, balance))
        return figures

    def _count(self, request: ReservationRequest, minute: int, clock: float) -> None:
        org, tokens, cost = request.org_id, request.tokens, request.cost_nanos
        window = self._minutes.get(minute)
        month = self._months.get(request.month)
        mcounts = month.counts if month is not None else _NO_COUNTS  # seeded whenever a check needs it
        tpm_ids: list[str] = []
        spend_ids: list[str] = []
        credit_ids: list[str] = []
        for check in request.checks:
            cid = check.counter_id
            if check.rpm_limit is not None or check.tpm_limit is not None:
                if window is None:
                    window = self._minutes[minute] = _Bucket()
                window.deadline = clock + WINDOW_TTL_S
                w = window.counts.get((org, cid))
                if w is None:
                    w = window.counts[(org, cid)] = [0, 0]
                if check.rpm_limit is not None:
                    w[0] += 1
                if check.tpm_limit is not None:
                    w[1] += tokens
                    tpm_ids.append(cid)
            if check.spend_limit_nanos is not None:
                mcounts[(org, cid)][0] += cost
                spend_ids.append(cid)
            credit_id = check.credit_id
            if check.prepaid and credit_id and credit_id not in credit_ids:  # one charge per balance
                self._credits[(org, credit_id)][0] -= cost
                credit_ids.append(credit_id)
        expires_at = request.now + request.ttl_s
        rkey = (org, request.reservation_id)
        self._reservations[rkey] = _Reservation(
            tokens, cost, request.now, expires_at, minute, request.month, tpm_ids, spend_ids, credit_ids, request.note
        )
        self._index(rkey, expires_at)

    def _index(self, rkey: Key, expires_at: float) -> None:
        second = int(expires_at)
        due = self._due.get(second)
        if due is None:
            due = self._due[second] = {}
            heapq.heappush(self._due_heap, second)
        due[rkey] = None

    def _unindex(self, rkey: Key, expires_at: float) -> None:
        due = self._due.get(int(expires_at))
        if due is not None:
            due.pop(rkey, None)
            if not due:
                del self._due[int(expires_at)]

    async def settle(self, settlement: Settlement) -> bool:
        validate_settlement(settlement.tokens, settlement.cost_nanos)
        org = settlement.org_id
        rkey = (org, settlement.reservation_id)
        res = self._reservations.pop(rkey, None)
        if res is None:
            marker = self._provisional.get(rkey)
            if marker is not None:  # swept as an estimate: the first real figures replace it, once
                if settlement.provisional:
                    return False
                del self._provisional[rkey]
                provisional, deadline = marker
                self._settled_claims[rkey] = deadline
                self._apply(org, provisional, settlement)
                return True
            if settlement.admission is not None and rkey not in self._settled_claims:
                await self._settle_lost(settlement, settlement.admission, rkey)
            return False
        claimed = rkey in self._claimed
        self._claimed.discard(rkey)
        deadline = res.expires_at + RESERVATION_MARGIN_S
        self._unindex(rkey, res.expires_at)
        self._apply(org, res, settlement)
        if settlement.provisional:
            res.tokens, res.cost = settlement.tokens, settlement.cost_nanos
            self._provisional[rkey] = (res, deadline)
        elif claimed:
            self._settled_claims[rkey] = deadline
        return True

    def _apply(self, org: str, res: _Reservation, settlement: Settlement) -> None:
        """Add ``actual - counted`` to every counter ``res`` counted that still exists."""
        dtokens, dcost = settlement.tokens - res.tokens, settlement.cost_nanos - res.cost
        # Only counters that still exist are adjusted (as in Redis, where they may have expired).
        window = self._minutes.get(res.minute)
        if window is not None:
            for cid in res.tpm_ids:
                w = window.counts.get((org, cid))
                if w is not None:
                    w[1] += dtokens
        month = self._months.get(res.month)
        if month is not None:
            for cid in res.spend_ids:
                s = month.counts.get((org, cid))
                if s is not None:
                    s[0] += dcost
        for credit_id in res.credit_ids:
            c = self._credits.get((org, credit_id))
            if c is not None:
                c[0] -= dcost

    async def extend(self, org_id: str, reservation_id: str, expires_at: float) -> bool:
        rkey = (org_id, reservation_id)
        res = self._reservations.get(rkey)
        if res is None or rkey in self._claimed:
            return False
        if expires_at > res.expires_at:
            self._unindex(rkey, res.expires_at)
            res.expires_at = expires_at
            self._index(rkey, expires_at)
        return True

    async def _settle_lost(self, settlement: Settlement, admission: Admission, rkey: Key) -> None:
        """Count the actual figures of a reservation this backend does not know (see ``Counters.settle``)."""
        org, checks, month = settlement.org_id, admission.checks, admission.month
        for _ in range(SEED_ATTEMPTS):
            since = self._flights.now()
            spend_ids, credit_ids = self._unseeded(org, checks, month)
            if not spend_ids and not credit_ids:
                break
            await self._seed(org, month, admission.now, spend_ids, credit_ids, since)
        else:
            raise BackendUnavailable(f"counters of {org!r} vanished while being seeded {SEED_ATTEMPTS} times")
        if rkey in self._reservations or rkey in self._settled_claims or rkey in self._provisional:  # meanwhile
            return
        window = self._minutes.get(minute_of(admission.now))
        mcounts = self._months[month].counts if month in self._months else _NO_COUNTS
        counted: set[str] = set()
        for check in checks:
            cid = check.counter_id
            if check.tpm_limit is not None and window is not None and (w := window.counts.get((org, cid))):
                w[1] += settlement.tokens
            if check.spend_limit_nanos is not None and cid not in counted and (m := mcounts.get((org, cid))):
                m[0] += settlement.cost_nanos
                counted.add(cid)
            credit_id = check.credit_id
            if check.prepaid and credit_id and f"c:{credit_id}" not in counted:
                self._credits[(org, credit_id)][0] -= settlement.cost_nanos
                counted.add(f"c:{credit_id}")

    async def expired(self, now: float, limit: int = 1000) -> list[ExpiredReservation]:
        out: list[ExpiredReservation] = []
        heap = self._due_heap
        while heap and len(out) < limit and heap[0] <= now:
            second = heap[0]
            due = self._due.get(second)
            if due:
                for rkey in list(due):
                    res = self._reservations[rkey]
                    if res.expires_at <= now:
                        del due[rkey]  # claimed: never returned again, but still there for the caller's settle
                        self._claimed.add(rkey)
                        out.append(ExpiredReservation(rkey[1], rkey[0], res.tokens, res.cost, res.created_at, res.note))
                        if len(out) >= limit:
                            break
                if due:  # the limit was reached, or the rest expire later within this second
                    break
                del self._due[second]
            heapq.heappop(heap)
        return out

    async def add_credits(self, org_id: str, credit_id: str, nanos: int, seq: int) -> int | None:
        validate_credit(nanos, seq)
        key = (org_id, credit_id)
        credit = self._credits.get(key)
        if credit is None:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending()
            pending.credits[seq] = nanos
            pending.deadline = self._clock() + PENDING_CREDIT_TTL_S
            return None
        if seq > credit[1]:
            credit[0] += nanos
            credit[1] = seq
        return credit[0]

    async def state(self, org_id: str, checks: tuple[LimitCheck, ...], now: float, month: str) -> list[CounterState]:
        for _ in range(SEED_ATTEMPTS):
            since = self._flights.now()
            spend_ids, credit_ids = self._unseeded(org_id, checks, month)
            if not spend_ids and not credit_ids:
                break
            await self._seed(org_id, month, now, spend_ids, credit_ids, since)
        else:
            raise BackendUnavailable(f"counters of {org_id!r} vanished while being seeded {SEED_ATTEMPTS} times")
        window = self._minutes.get(minute_of(now))
        wcounts = window.counts if window is not None else _NO_COUNTS
        mcounts = self._months[month].counts if month in self._months else {}
        out = []
        for check in checks:
            w = wcounts.get((org_id, check.counter_id), [0, 0])
            spend = mcounts.get((org_id, check.counter_id), [0])[0] if check.spend_limit_nanos is not None else 0
            credit = self._credits[(org_id, check.credit_id)][0] if check.prepaid and check.credit_id else None
            out.append(
                CounterState(
                    check.counter_id,
                    w[0] if check.rpm_limit is not None else 0,
                    w[1] if check.tpm_limit is not None else 0,
                    spend,
                    credit,
                )
            )
        return out

    async def close(self) -> None:
        """Nothing to release."""

    def _unseeded(self, org: str, checks: tuple[LimitCheck, ...], month: str) -> tuple[list[str], list[str]]:
        bucket = self._months.get(month)
        mcounts = bucket.counts if bucket is not None else _NO_COUNTS
        spend_ids: list[str] = []
        credit_ids: list[str] = []
        for check in checks:
            if check.spend_limit_nanos is not None and (org, check.counter_id) not in mcounts:
                spend_ids.append(check.counter_id)
            credit_id = check.credit_id
            if check.prepaid and credit_id and (org, credit_id) not in self._credits and credit_id not in credit_ids:
                credit_ids.append(credit_id)
        return spend_ids, credit_ids

    async def _seed(
        self, org: str, month: str, now: float, spend_ids: list[str], credit_ids: list[str], since: float
    ) -> None:
        async def seed() -> None:
            baseline = await self._baseline.baseline(org, list(spend_ids), list(credit_ids), month)
            if spend_ids:
                bucket = self._months.get(month)
                if bucket is None:
                    bucket = self._months[month] = _Bucket()
                bucket.deadline = max(bucket.deadline, self._clock() + month_ttl_s(month, now))
                for cid in spend_ids:
                    bucket.counts.setdefault((org, cid), [int(baseline.spend_nanos.get(cid, 0))])
            for credit_id in credit_ids:
                key = (org, credit_id)
                if key not in self._credits:  # set-if-absent: a concurrent seed may have won
                    pending = self._pending.pop(key, None)
                    balance, mark = seeded_credit(baseline, credit_id, pending.credits if pending else None)
                    self._credits[key] = [balance, mark]

        await self._flights.run((org, month, tuple(spend_ids), tuple(credit_ids)), seed, since)

    def _prune(self, clock: float) -> None:
        """Drop what Redis would have expired by now (amortized: runs every few seconds)."""
        self._next_prune = clock + PRUNE_EVERY_S
        for minute in [minute for minute, bucket in self._minutes.items() if bucket.deadline <= clock]:
            del self._minutes[minute]
        for month in [month for month, bucket in self._months.items() if bucket.deadline <= clock]:
            del self._months[month]
        for key in [key for key, pending in self._pending.items() if pending.deadline <= clock]:
            del self._pending[key]
        for key in [key for key, deadline in self._settled_claims.items() if deadline <= clock]:
            del self._settled_claims[key]
        for key in [key for key, (_, deadline) in self._provisional.items() if deadline <= clock]:
            del self._provisional[key]
