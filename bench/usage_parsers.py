"""Micro-benchmark of the usage parsers over the recorded provider responses (not a test).

Each SSE recording is fed one event per chunk, the way providers flush them. Reported per chunk: the
whole stream (parser set-up and finish spread over its chunks), the steady state (a mid-stream
parser fed the stream's middle chunks again and again) and the SSE framing alone. JSON bodies are fed
whole.

    .venv/bin/python bench/usage_parsers.py [--min-time 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from quotagate.apis import Api, api_for_path
from quotagate.usage import UsageParser, parser_for
from quotagate.usage.sse import SseDecoder

REPO = Path(__file__).resolve().parents[1]


def fixtures_root() -> Path:
    env = os.environ.get("QUOTAGATE_FIXTURES")
    if env:
        return Path(env)
    copy = REPO / "tests" / "fixtures" / "providers"
    return copy if copy.is_dir() else REPO.parent / "shared" / "fixtures" / "providers"


def event_chunks(body: bytes) -> list[bytes]:
    """The body cut after each blank line, as a provider flushes one event per write."""
    parts = body.split(b"\n\n")
    chunks = [part + b"\n\n" for part in parts[:-1]]
    if parts[-1]:
        chunks.append(parts[-1])
    return chunks


def per_run_seconds(run: Callable[[], object], min_time: float) -> float:
    """Best of five timings, each repeating ``run`` for at least ``min_time / 5`` seconds."""
    best = float("inf")
    for _ in range(5):
        loops, elapsed = 0, 0.0
        start = time.perf_counter()
        while elapsed < min_time / 5:
            run()
            loops += 1
            elapsed = time.perf_counter() - start
        best = min(best, elapsed / loops)
    return best


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--min-time", type=float, default=0.2, help="seconds spent timing each case")
    min_time = args.parse_args().min_time
    root = fixtures_root()
    print(f"fixtures: {root}\n")
    print("| case | chunks | bytes | us/chunk, whole stream | us/chunk, steady | framing alone | us/stream |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    bodies: list[tuple[str, float, int]] = []
    for meta_path in sorted(root.glob("*/*/meta.json")):
        case_dir = meta_path.parent
        meta = json.loads(meta_path.read_text())
        api = api_for_path(meta["endpoint"])
        assert api is not None
        name = f"{case_dir.parent.name}/{case_dir.name}"
        sse = case_dir / "response.sse"
        if not sse.exists():
            body = (case_dir / "response.json").read_bytes()

            def run_body(body: bytes = body, api: Api = api) -> object:
                parser = parser_for(api, streaming=False)
                parser.feed(body)
                return parser.finish()

            bodies.append((name, per_run_seconds(run_body, min_time), len(body)))
            continue
        chunks = event_chunks(sse.read_bytes())

        def run_stream(chunks: list[bytes] = chunks, api: Api = api) -> object:
            parser = parser_for(api, streaming=True)
            for chunk in chunks:
                parser.feed(chunk)
            return parser.finish()

        def run_framing(chunks: list[bytes] = chunks) -> object:
            decoder = SseDecoder()
            for chunk in chunks:
                decoder.feed(chunk)
            return decoder.finish()

        middle = chunks[1:-1] or chunks
        steady = parser_for(api, streaming=True)
        steady.feed(chunks[0])

        def run_steady(middle: list[bytes] = middle, parser: UsageParser = steady) -> object:
            for chunk in middle:
                parser.feed(chunk)
            return None

        stream_s = per_run_seconds(run_stream, min_time)
        steady_s = per_run_seconds(run_steady, min_time)
        framing_s = per_run_seconds(run_framing, min_time)
        n = len(chunks)
        size = sum(map(len, chunks))
        print(
            f"| {name} | {n} | {size} | {stream_s / n * 1e6:.2f} | {steady_s / len(middle) * 1e6:.2f} "
            f"| {framing_s / n * 1e6:.2f} | {stream_s * 1e6:.1f} |"
        )
    print("\n| JSON body | bytes | us/body |")
    print("|---|---:|---:|")
    for name, seconds, size in bodies:
        print(f"| {name} | {size} | {seconds * 1e6:.1f} |")


if __name__ == "__main__":
    main()
