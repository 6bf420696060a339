"""The last N requests the fake provider received, for tests to inspect (GET /_fake/requests)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    path: str
    query: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    at: float  # unix time

    def to_json(self) -> dict[str, Any]:
        """Headers as a lower-case dict (repeats joined with ", "); the body parsed when it is JSON."""
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        body: Any
        try:
            body = orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            body = self.body.decode("utf-8", "replace")
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": headers,
            "body": body,
            "at": self.at,
        }


class Recorder:
    """A bounded ring of received requests; stores raw bytes and decodes only when asked."""

    def __init__(self, limit: int) -> None:
        self._items: deque[Received] = deque(maxlen=max(limit, 0))
        self._lock = threading.Lock()  # the app may be read from a test thread
        self.enabled = limit > 0

    def add(self, method: str, path: str, query: str, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self.enabled:
            item = Received(method, path, query, tuple(headers), body, time.time())
            with self._lock:
                self._items.append(item)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._items)
        return [item.to_json() for item in items]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
