"""A bounded soak: steady mixed traffic through Envoy + Quotagate to the fake provider, for memory and fd drift.

    python -m bench.soak --port P --credential KEY --duration 120 [--rate 40] [--stream-rate 8]

Every 1/rate s a non-streaming chat request (a new connection each: connection churn included); every
1/stream-rate s a stream of 20 chunks 20 ms apart from the fake provider, of which one in five is
abandoned by the client after 5 chunks, one in ten is cut by the provider after 5 chunks
(`x-fake-cut-after`), and about half of the rest ask no usage (Quotagate's rewrite filter adds it). Prints one JSON line per 10 s interval and a final one. The orchestrator samples
RSS and open fds of Quotagate and Envoy meanwhile (bench/run.py).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from typing import Any

import orjson
import uvloop

from bench.loadgen import percentiles

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Tell me about the sea."}], "max_tokens": 64}


def _request(port: int, credential: str, *, stream: bool, extra: dict[str, str], usage: bool = True) -> bytes:
    body: dict[str, Any] = dict(BODY)
    if stream:
        body["stream"] = True
        if usage:
            body["stream_options"] = {"include_usage": True}
    raw = orjson.dumps(body)
    headers = {
        "host": f"127.0.0.1:{port}",
        "content-type": "application/json",
        "authorization": f"Bearer {credential}",
        "connection": "close",
        "content-length": str(len(raw)),
        **extra,
    }
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        + b"\r\n"
        + raw
    )


class Soak:
    def __init__(self, port: int, credential: str) -> None:
        self.port = port
        self.plain = _request(port, credential, stream=False, extra={})
        chunks = {"x-fake-chunks": "20", "x-fake-output-tokens": "20", "x-fake-chunk-delay-ms": "20"}
        self.stream = _request(port, credential, stream=True, extra=chunks)
        # without include_usage: Quotagate's rewrite filter adds it (one more round trip)
        self.rewritten = _request(port, credential, stream=True, extra=chunks, usage=False)
        self.cut = _request(port, credential, stream=True, extra={**chunks, "x-fake-cut-after": "5"})
        self.counts: collections.Counter[str] = collections.Counter()
        self.latency: list[float] = []
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def one(self, request: bytes, kind: str, abandon_after: int | None = None) -> None:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)
        except (OSError, TimeoutError):
            self.counts[f"{kind}:connect_error"] += 1
            return
        try:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status = int(head[9:12])
            if status != 200:
                self.counts[f"{kind}:status_{status}"] += 1
                return
            if abandon_after is not None:
                seen = 0
                while seen < abandon_after:
                    data = await asyncio.wait_for(reader.read(4096), 10)
                    if not data:
                        break
                    seen += data.count(b"data: ")
                self.counts[f"{kind}:abandoned"] += 1
                return
            while await asyncio.wait_for(reader.read(65536), 10):
                pass
            self.counts[f"{kind}:ok"] += 1
            if kind == "json":
                self.latency.append((time.perf_counter() - started) * 1e3)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.counts[f"{kind}:{type(exc).__name__}"] += 1
        finally:
            writer.close()

    async def run(self, duration: float, rate: float, stream_rate: float) -> dict[str, Any]:
        start = time.perf_counter()
        next_json = next_stream = start
        n_stream = 0
        report_at = start + 10
        while (now := time.perf_counter()) < start + duration:
            while next_json <= now:
                self.spawn(self.one(self.plain, "json"))
                next_json += 1 / rate
            while next_stream <= now:
                n_stream += 1
                if n_stream % 10 == 0:
                    self.spawn(self.one(self.cut, "stream_cut_by_provider"))
                elif n_stream % 5 == 0:
                    self.spawn(self.one(self.stream, "stream_client_gone", abandon_after=5))
                elif n_stream % 2:
                    self.spawn(self.one(self.rewritten, "stream_rewritten"))
                else:
                    self.spawn(self.one(self.stream, "stream"))
                next_stream += 1 / stream_rate
            if now >= report_at:
                self._print({"t": round(now - start), "counts": dict(self.counts)})
                report_at += 10
            await asyncio.sleep(min(next_json, next_stream) - time.perf_counter())
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=15)
        return {
            "final": True,
            "seconds": duration,
            "counts": dict(self.counts),
            "json_latency_ms": percentiles(self.latency),
        }

    @staticmethod
    def _print(data: dict[str, Any]) -> None:
        sys.stdout.write(orjson.dumps(data).decode() + "\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--credential", required=True)
    parser.add_argument("--duration", type=float, default=120)
    parser.add_argument("--rate", type=float, default=40)
    parser.add_argument("--stream-rate", type=float, default=8)
    args = parser.parse_args()
    soak = Soak(args.port, args.credential)
    result = uvloop.run(soak.run(args.duration, args.rate, args.stream_rate))
    Soak._print(result)


if __name__ == "__main__":
    main()
