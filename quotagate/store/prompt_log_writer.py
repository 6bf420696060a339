"""The ContentSink of a gateway process: a bounded in-memory queue drained by a thread that redacts and writes.

Logged content is never on a request's path: `request` and `response` check the project's policy (a
dict lookup) and append to a deque. When the queue is full, content is dropped and counted rather than
making a request wait; prompt logs are a record for people, not money (usage events are spooled durably).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from quotagate.gateway.ticket import Ticket
from quotagate.governance.policy import ProjectPolicy, PromptLogMode
from quotagate.governance.redaction import Redactor
from quotagate.store.database import Database
from quotagate.store.prompt_logs_repo import Content, save_content

log = logging.getLogger(__name__)
BATCH = 200


def _storable(text: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: one generated NUL would fail its batch, and every capture queued behind
    it, forever. It becomes U+FFFD, as undecodable bytes do."""
    return text.replace("\x00", "\ufffd") if text is not None and "\x00" in text else text


@dataclass(frozen=True, slots=True)
class _Captured:
    ticket: Ticket
    policy: ProjectPolicy
    at: float
    body: bytes | None = None
    text: str | None = None


class PromptLogWriter:
    def __init__(
        self,
        db: Database,
        policy_of: Callable[[str], ProjectPolicy],
        *,
        max_queue: int = 10_000,
        interval_s: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._policy_of = policy_of
        self._queue: deque[_Captured] = deque()
        self._max = max_queue
        self._interval = interval_s
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redactors: dict[tuple[tuple[str, str], ...], Redactor] = {}
        self._drain_lock = threading.Lock()
        self.dropped = 0
        self.written = 0

    # -- ContentSink (request path: no I/O, no parsing)
    def request(self, ticket: Ticket, body: bytes) -> None:
        self._put(ticket, body=body)

    def response(self, ticket: Ticket, text: str) -> None:
        self._put(ticket, text=text)

    def _put(self, ticket: Ticket, *, body: bytes | None = None, text: str | None = None) -> None:
        policy = self._policy_of(ticket.project_id)
        if policy.prompt_mode is PromptLogMode.OFF:
            return
        if len(self._queue) >= self._max:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                log.warning("prompt-log queue full: %d capture(s) dropped so far", self.dropped)
            return
        self._queue.append(_Captured(ticket, policy, self._clock(), body, text))

    # -- lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prompt-log-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.drain_once()
        except Exception as exc:
            log.warning("prompt-log final drain failed (%s); %d capture(s) lost", exc, len(self._queue))

    def depth(self) -> int:
        return len(self._queue)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.drain_once()
            except Exception as exc:  # database down: the queue holds (up to its bound) until it is back
                log.warning("prompt-log writer: %s; %d capture(s) queued", exc, len(self._queue))
            self._wake.wait(self._interval)
            self._wake.clear()

    def drain_once(self) -> int:
        with self._drain_lock:
            total = 0
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                items = [self._content(c) for c in batch]
                try:
                    self._save(items)
                except Exception:
                    self._queue.extendleft(reversed(batch))  # keep the order; retried on the next round
                    raise
                total += len(batch)
                self.written += len(batch)
            return total

    def _save(self, items: list[Content]) -> None:
        for attempt in (1, 2):
            try:
                with self._db.transaction() as session:
                    save_content(session, items)
                return
            except IntegrityError:  # another process inserted one of these rows first; now it exists
                if attempt == 2:
                    raise

    def _content(self, c: _Captured) -> Content:
        p, t = c.policy, c.ticket
        counts: Counter[str] = Counter()
        body = text = None
        if p.prompt_mode is PromptLogMode.REDACTED:
            redactor = self._redactor(p.redact)
            body = redactor.body(c.body, counts) if c.body is not None else None
            text = redactor.text(c.text, counts) if c.text is not None else None
        else:
            body = c.body.decode("utf-8", "replace") if c.body is not None else None
            text = c.text
        return Content(
            request_id=t.request_id,
            org_id=t.org_id,
            project_id=t.project_id,
            mode=p.prompt_mode.value,
            at=datetime.fromtimestamp(c.at, UTC),
            retention_days=p.retention_days,
            request_body=_storable(body),
            response_text=_storable(text),
            redactions=dict(counts),
        )

    def _redactor(self, custom: tuple[tuple[str, str], ...]) -> Redactor:
        redactor = self._redactors.get(custom)
        if redactor is None:
            redactor = self._redactors[custom] = Redactor(custom)
        return redactor
