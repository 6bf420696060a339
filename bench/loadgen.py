"""The benchmark's own load generators (each run as a process of its own: its own GIL, its own CPU).

    python -m bench.loadgen open   --port P --request FILE --rate 500 --duration 8 [--warmup 1]
    python -m bench.loadgen closed --port P --request FILE --connections 16 --duration 8   (when wrk is missing)
    python -m bench.loadgen stream --port P --request FILE --requests 60 [--warmup 5]

`FILE` holds the raw HTTP/1.1 request (head and body), sent as is over keep-alive connections to
127.0.0.1 only. Each prints one JSON object.

open: an open loop, as wrk2 does it. Request i is due at start + i/rate whatever happened before; a
pacer thread (nanosleep, ~0.1 ms precision instead of the event loop's 1 ms timers) hands due requests
to the event loop, which sends each on an idle connection, opens another (up to --max-connections),
or queues it. Latency runs from the request's *scheduled* time to the last byte of its response, so
a slow server's queueing is counted (no coordinated omission). Requests still unanswered --grace
seconds after the last one was due count as timeouts.

stream: one connection, one request at a time. The upstream (bench/upstream.py) writes its monotonic
clock into every chunk's content (`t=<ns>`); per chunk, delivery is arrival minus that stamp (the
same clock: one machine), and TTFT is the first stamped chunk's arrival minus the request's send.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import httptools
import orjson
import uvloop

HOST = "127.0.0.1"


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    data = sorted(values)

    def at(q: float) -> float:
        return data[min(len(data) - 1, max(0, round(q / 100 * len(data) + 0.5) - 1))]

    return {
        "n": len(data),
        "p50": at(50),
        "p90": at(90),
        "p99": at(99),
        "p999": at(99.9),
        "max": data[-1],
        "mean": statistics.fmean(data),
    }


# -- open loop ----------------------------------------------------------------------------------


class _Conn(asyncio.Protocol):
    def __init__(self, gen: OpenLoop) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.due: int | None = None
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def send(self, due: int) -> None:
        self.due = due
        assert self.transport is not None
        self.gen.sent_at.append(time.perf_counter_ns() - due)
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.gen.failed(self)
            assert self.transport is not None
            self.transport.close()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        now = time.perf_counter_ns()
        due, self.due = self.due, None
        if due is not None:
            self.gen.completed(self, due, now, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)


class OpenLoop:
    def __init__(self, port: int, request: bytes, rate: float, duration: float, warmup: float, max_conns: int) -> None:
        self.port, self.request, self.rate = port, request, rate
        self.duration, self.warmup, self.max_conns = duration, warmup, max_conns
        self.idle: list[_Conn] = []
        self.conns: set[_Conn] = set()
        self.opening = 0
        self.queue: collections.deque[int] = collections.deque()
        self.latencies: list[float] = []
        self.sent_at: list[int] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors = 0
        self.outstanding = 0
        self.measure_from = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.all_due = asyncio.Event()
        self.drained = asyncio.Event()

    async def _open(self) -> None:
        self.opening += 1
        try:
            assert self.loop is not None
            _, conn = await self.loop.create_connection(lambda: _Conn(self), HOST, self.port)
        except OSError:
            self.opening -= 1
            self.errors += 1
            if self.queue:
                self.queue.popleft()
                self._finish_one()
            return
        self.opening -= 1
        self.conns.add(conn)
        self._ready(conn)

    def _ready(self, conn: _Conn) -> None:
        if self.queue:
            conn.send(self.queue.popleft())
        else:
            self.idle.append(conn)

    def fire(self, dues: list[int]) -> None:
        for due in dues:
            self.outstanding += 1
            if self.idle:
                self.idle.pop().send(due)
            else:
                self.queue.append(due)
                if len(self.conns) + self.opening < self.max_conns:
                    assert self.loop is not None
                    self.loop.create_task(self._open())

    def completed(self, conn: _Conn, due: int, now: int, status: int) -> None:
        if due >= self.measure_from:
            self.latencies.append((now - due) / 1e6)
            self.statuses[status] += 1
        self._finish_one()
        self._ready(conn)

    def failed(self, conn: _Conn) -> None:
        if conn.due is not None:
            conn.due = None
            self.errors += 1
            self._finish_one()

    def lost(self, conn: _Conn) -> None:
        self.failed(conn)
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if self.queue and len(self.conns) + self.opening < self.max_conns:
            assert self.loop is not None
            self.loop.create_task(self._open())

    def _finish_one(self) -> None:
        self.outstanding -= 1
        if self.all_due.is_set() and self.outstanding == 0:
            self.drained.set()

    def _pace(self, start: int, count: int, stop: threading.Event) -> None:
        interval = 1e9 / self.rate
        assert self.loop is not None
        i = 0
        while i < count and not stop.is_set():
            now = time.perf_counter_ns()
            due = start + int(i * interval)
            if due > now:
                time.sleep((due - now) / 1e9)
                now = time.perf_counter_ns()
            batch = []
            while i < count and start + int(i * interval) <= now:
                batch.append(start + int(i * interval))
                i += 1
            self.loop.call_soon_threadsafe(self.fire, batch)
        self.loop.call_soon_threadsafe(self._all_fired)

    def _all_fired(self) -> None:
        self.all_due.set()
        if self.outstanding == 0:
            self.drained.set()

    async def run(self, preopen: int, grace: float) -> dict[str, Any]:
        self.loop = asyncio.get_running_loop()
        await asyncio.gather(*(self._open() for _ in range(min(preopen, self.max_conns))))
        count = int(self.rate * (self.warmup + self.duration))
        start = time.perf_counter_ns() + 50_000_000
        self.measure_from = start + int(self.warmup * 1e9)
        stop = threading.Event()
        pacer = threading.Thread(target=self._pace, args=(start, count, stop), daemon=True)
        pacer.start()
        await self.all_due.wait()
        timed_out = False
        try:
            await asyncio.wait_for(self.drained.wait(), grace)
        except TimeoutError:
            timed_out = True
        stop.set()
        ended = time.perf_counter_ns()
        measured = len(self.latencies)
        expected = int(self.rate * self.duration)
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()
        ok = sum(n for s, n in self.statuses.items() if 200 <= s < 300)
        return {
            "mode": "open",
            "rate": self.rate,
            "duration_s": self.duration,
            "expected": expected,
            "completed": measured,
            "ok": ok,
            "non_2xx": measured - ok,
            "errors": self.errors,
            "timeouts": max(0, self.outstanding) if timed_out else 0,
            "achieved_rps": measured / max(1e-9, (ended - self.measure_from) / 1e9),
            "connections": len(self.conns),
            "latency_ms": percentiles(self.latencies),
            "send_lag_ms": percentiles([s / 1e6 for s in self.sent_at[len(self.sent_at) // 10 :]]),
            "statuses": {str(k): v for k, v in self.statuses.items()},
        }


# -- closed loop (fallback when wrk is not installed) -----------------------------------------------


async def closed_loop(port: int, request: bytes, connections: int, duration: float, warmup: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + duration

    async def worker() -> None:
        nonlocal errors
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            errors += 1
            return
        while time.perf_counter() < end:
            t = time.perf_counter()
            writer.write(request)
            try:
                status, _ = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                errors += 1
                return
            done = time.perf_counter()
            if t >= measure_from:
                latencies.append((done - t) * 1e3)
                statuses[status] += 1
        writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    return {
        "mode": "closed",
        "connections": connections,
        "duration_s": duration,
        "completed": len(latencies),
        "ok": ok,
        "non_2xx": len(latencies) - ok,
        "errors": errors,
        "rps": len(latencies) / duration,
        "latency_ms": percentiles(latencies),
    }


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readline()
        return status, body
    return status, await reader.readexactly(length or 0)


# -- streaming ------------------------------------------------------------------------------------


async def _one_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, ttft: list[float], delivery: list[float]
) -> int:
    sent = time.perf_counter_ns()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"the stream was answered {head.splitlines()[0]!r}")
    lower = head.lower()
    chunked = b"transfer-encoding: chunked" in lower
    buffered = b""
    first = True
    chunks = 0

    def take(now: int) -> None:
        nonlocal buffered, first, chunks
        *events, buffered = buffered.split(b"\n\n")
        for event in events:
            at = event.find(b"t=")
            if at < 0:
                continue
            end = at + 2
            while end < len(event) and 48 <= event[end] <= 57:
                end += 1
            stamp = int(event[at + 2 : end])
            if first:
                ttft.append((now - sent) / 1e6)
                first = False
            delivery.append((now - stamp) / 1e6)
            chunks += 1

    if chunked:
        while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
            buffered += (await reader.readexactly(size + 2))[:-2]
            take(time.perf_counter_ns())
        await reader.readline()
    else:  # content-length or close-delimited
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        left = length if length is not None else -1
        while left != 0:
            data = await reader.read(65536 if left < 0 else min(left, 65536))
            if not data:
                break
            buffered += data
            if left > 0:
                left -= len(data)
            take(time.perf_counter_ns())
    return chunks


async def streams(port: int, request: bytes, requests: int, warmup: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(HOST, port)
    ttft: list[float] = []
    delivery: list[float] = []
    for _ in range(warmup):
        await _one_stream(reader, writer, request, [], [])
    chunks = 0
    for _ in range(requests):
        chunks += await _one_stream(reader, writer, request, ttft, delivery)
    writer.close()
    return {
        "mode": "stream",
        "requests": requests,
        "chunks": chunks,
        "ttft_ms": percentiles(ttft),
        "delivery_ms": percentiles(delivery),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["open", "closed", "stream"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--request", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=16, help="closed loop: connections; open: pre-opened")
    parser.add_argument("--max-connections", type=int, default=512)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    request = args.request.read_bytes()
    if args.mode == "open":
        gen = OpenLoop(args.port, request, args.rate, args.duration, args.warmup, args.max_connections)
        result = uvloop.run(gen.run(args.connections, args.grace))
    elif args.mode == "closed":
        result = uvloop.run(closed_loop(args.port, request, args.connections, args.duration, args.warmup))
    else:
        result = uvloop.run(streams(args.port, request, args.requests, int(args.warmup)))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
