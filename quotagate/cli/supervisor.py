"""`quotagate serve --workers N`: N worker processes, restarted when they die, stopped together.

A worker that dies after it was listening is restarted with a doubling delay (a crash must not leave the
deployment silently one worker short). A worker that dies before it ever listened has a problem a restart
will not fix (a busy port, a bad setting): every worker is stopped and the supervisor exits 1. So does a
worker that keeps dying (`burst` deaths within `window_s`). SIGTERM/SIGINT stop every worker gracefully.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from quotagate.errors import ConfigError
from quotagate.settings import Settings

READY_MARK = "listening on "  # in the line `quotagate serve` prints once it accepts calls


def require_shared_backends(settings: Settings) -> None:
    """Workers share counters and the store: the embedded SQLite file and in-process counters serve one process."""
    if settings.redis_url is None or settings.effective_database_url.startswith("sqlite"):
        raise ConfigError(
            "--workers > 1 needs shared backends: set QUOTAGATE_REDIS_URL (counters) and a PostgreSQL "
            "QUOTAGATE_DATABASE_URL (config, usage, ledger); the embedded SQLite + in-process counters serve one process"
        )


@dataclass
class _Worker:
    index: int
    argv: list[str]
    proc: subprocess.Popen[str] | None = None
    relay: threading.Thread | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    deaths: list[float] = field(default_factory=list)
    restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        argvs: list[list[str]],
        *,
        stop_timeout_s: float,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        burst: int = 5,
        window_s: float = 60.0,
    ) -> None:
        self._workers = [_Worker(i, argv) for i, argv in enumerate(argvs)]
        self._stop_timeout_s = stop_timeout_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._burst = burst
        self._window_s = window_s
        self._stopping = threading.Event()

    def run(self) -> int:
        """Until a signal (exit 0 once every worker stopped cleanly) or a worker that cannot run (exit 1)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for worker in self._workers:
            self._start(worker)
        failure: str | None = None
        while failure is None and not self._stopping.wait(0.1):
            failure = self._tend()
        if failure is not None:
            _say(f"{failure}; stopping every worker")
            self._signal_all(signal.SIGTERM)
        codes = self._wait_all()
        for worker in self._workers:
            if worker.relay is not None:
                worker.relay.join(timeout=5)
        if failure is not None:
            return 1
        return 0 if all(code == 0 for code in codes) else 1

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stopping.set()
        self._signal_all(signum)

    def _signal_all(self, signum: int) -> None:
        for worker in self._workers:
            if worker.proc is not None and worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signum)

    def _start(self, worker: _Worker) -> None:
        worker.ready.clear()
        worker.restart_at = None
        worker.proc = subprocess.Popen(worker.argv, stdout=subprocess.PIPE, text=True, bufsize=1)
        _say(f"worker {worker.index} started (pid {worker.proc.pid})")
        worker.relay = threading.Thread(target=self._relay, args=(worker, worker.proc), daemon=True)
        worker.relay.start()

    def _relay(self, worker: _Worker, proc: subprocess.Popen[str]) -> None:
        """Pass the worker's output on, noting when it says it listens."""
        assert proc.stdout is not None
        for line in proc.stdout:
            if READY_MARK in line:
                worker.ready.set()
            sys.stdout.write(line)
            sys.stdout.flush()
        proc.stdout.close()

    def _tend(self) -> str | None:
        """Restart what died (when its delay is over); the reason to give up, if there is one."""
        now = time.monotonic()
        for worker in self._workers:
            proc = worker.proc
            assert proc is not None
            if worker.restart_at is not None:
                if now >= worker.restart_at and not self._stopping.is_set():
                    self._start(worker)
                continue
            code = proc.poll()
            if code is None or self._stopping.is_set():
                continue
            if worker.relay is not None:  # its last lines may still be on their way: did it say it listened?
                worker.relay.join(timeout=2)
            if not worker.ready.is_set():
                return f"worker {worker.index} exited with code {code} before it was listening"
            worker.deaths = [t for t in worker.deaths if now - t < self._window_s] + [now]
            if len(worker.deaths) >= self._burst:
                return f"worker {worker.index} died {len(worker.deaths)} times within {self._window_s:.0f}s"
            delay = min(self._backoff_s * 2 ** (len(worker.deaths) - 1), self._max_backoff_s)
            worker.restart_at = now + delay
            _say(f"worker {worker.index} (pid {proc.pid}) exited with code {code}; restarting it in {delay:g}s")
        return None

    def _wait_all(self) -> list[int]:
        """Exit codes of the workers that were running (one waiting for its restart already said it died)."""
        deadline = time.monotonic() + self._stop_timeout_s
        codes: list[int] = []
        for worker in self._workers:
            proc = worker.proc
            assert proc is not None
            if worker.restart_at is not None:
                continue
            try:
                codes.append(proc.wait(timeout=max(deadline - time.monotonic(), 0.1)))
            except subprocess.TimeoutExpired:
                _say(f"worker {worker.index} did not stop within {self._stop_timeout_s:.0f}s; killing it")
                proc.kill()
                codes.append(proc.wait())
        return codes


def _say(message: str) -> None:
    print(f"quotagate serve: {message}", file=sys.stderr, flush=True)
