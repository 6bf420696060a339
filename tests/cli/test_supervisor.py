"""The worker supervisor of `serve --workers N` with stand-in workers: restart with a doubling delay, give up.

tests/envoy/test_serve.py runs it with real `quotagate serve` workers on PostgreSQL and Redis; here the
workers are small Python processes, so the rules that take many deaths run in a few seconds.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quotagate.cli.supervisor import Supervisor


def steady(marker: Path | None = None) -> list[str]:
    """Says it listens (and touches `marker`), then runs until SIGTERM, which it obeys with exit 0 (as serve)."""
    touch = f"open({str(marker)!r}, 'w').close()\n" if marker else ""
    return [
        sys.executable,
        "-c",
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "print('quotagate serve: gRPC listening on here', flush=True)\n"
        f"{touch}time.sleep(60)\n",
    ]


# Says it listens, then crashes.
CRASHING = [sys.executable, "-c", "print('quotagate serve: gRPC listening on here', flush=True); raise SystemExit(3)"]


@pytest.fixture(autouse=True)
def own_signals() -> Iterator[None]:
    """`run` takes SIGTERM/SIGINT (it runs in the main thread here); give pytest's back afterwards."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_a_worker_that_keeps_dying_is_restarted_with_a_doubling_delay_then_everything_stops(
    capfd: pytest.CaptureFixture[str],
) -> None:
    supervisor = Supervisor([steady(), CRASHING], stop_timeout_s=10, backoff_s=0.05, burst=3, window_s=60)
    assert supervisor.run() == 1
    err = capfd.readouterr().err
    assert err.count("worker 1 started") == 3
    assert "exited with code 3; restarting it in 0.05s" in err
    assert "exited with code 3; restarting it in 0.1s" in err
    assert "worker 1 died 3 times within 60s; stopping every worker" in err
    assert err.count("worker 0 started") == 1  # the healthy one was never restarted, only stopped


def test_sigterm_stops_every_worker_and_exits_0(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    markers = [tmp_path / f"worker-{i}" for i in range(2)]
    supervisor = Supervisor([steady(m) for m in markers], stop_timeout_s=10)

    def operator_stops_it_once_both_listen() -> None:
        deadline = time.monotonic() + 60
        while not all(m.exists() for m in markers) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)  # handled in the main thread, by the supervisor

    threading.Thread(target=operator_stops_it_once_both_listen, daemon=True).start()
    assert supervisor.run() == 0
    out = capfd.readouterr().out
    assert out.count("gRPC listening on here") == 2  # the workers' own lines pass through
