"""The metering backlog: how long the front door's probe waited, and Checks waiting for it to drain."""

from __future__ import annotations

import asyncio

import pytest

from quotagate.metering.backlog import MeteringBacklog
from tests.support.clock import Clock


def test_the_lag_is_the_last_probes_wait_or_the_pending_ones_when_longer() -> None:
    clock = Clock(100.0)
    backlog = MeteringBacklog(0.25, clock=clock)
    assert not backlog.behind() and backlog.lag_s == 0
    backlog.probe_sent()
    clock.now += 0.1
    backlog.probe_answered()
    assert backlog.lag_s == pytest.approx(0.1) and not backlog.behind()
    backlog.probe_sent()
    clock.now += 0.3  # still waiting: already behind, before the probe comes back
    assert backlog.behind() and backlog.lag_s == pytest.approx(0.3)
    backlog.probe_answered()
    assert backlog.behind()  # answered after 0.3 s
    backlog.probe_sent()
    clock.now += 0.01
    backlog.probe_answered()
    assert not backlog.behind()


async def test_a_check_waits_for_the_metering_to_catch_up_or_gives_up() -> None:
    backlog = MeteringBacklog(0.05)
    assert await backlog.caught_up(0.01)  # keeping up: at once

    backlog.probe_sent()
    await asyncio.sleep(0.08)  # the probe has waited past the limit
    assert backlog.behind()
    waiting = asyncio.create_task(backlog.caught_up(2.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    backlog.probe_answered()  # answered late: still behind
    backlog.probe_sent()
    backlog.probe_answered()  # the next one at once: caught up
    assert await asyncio.wait_for(waiting, 1.0) is True

    backlog.probe_sent()
    await asyncio.sleep(0.08)
    assert await backlog.caught_up(0.05) is False  # still behind after the wait: the Check is refused
