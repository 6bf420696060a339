"""What the Envoy front door adds to a streamed LLM response, by ext_proc processing mode (not a test).

A local SSE sender (its own process) stamps every chunk with the monotonic clock when it writes it;
the client (this process) reads the response through the real Envoy and takes, per chunk, the time
from that stamp to its arrival (delivery), and per request the time from sending the request to the
first chunk (TTFT). `quotagate serve` runs in its own process over a fresh SQLite home, with real
keys, limits and metering. Each mode is one Envoy configuration, rendered and then adapted:

* plain      Envoy with the router only (the baseline; the client names the upstream itself)
* stub       ext_authz Check answered by a constant grpc.aio server on uvloop: the floor of any
             Check written in Python, before Quotagate does any work
* check      ext_authz Check only (Quotagate), no ext_proc
* streamed   Check + metering ext_proc in STREAMED mode, Envoy waiting for every chunk's answer
* observe    Check + metering in observability mode: what `quotagate envoy render` ships
* rewrite    as observe, for a request whose body Quotagate rewrites (stream_options.include_usage)

    .venv/bin/python -m bench.streaming_modes [--requests 200] [--chunks 20] [--interval-ms 2]

Envoy runs with one worker; the numbers are for comparing modes on one machine, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.upstream import serve_streams
from quotagate.settings import load_settings
from tests.support.envoy import (  # RenderOptions and render_envoy_config: the quietly imported renderer
    RenderOptions,
    free_port,
    prepare_home,
    render_envoy_config,
    running_envoy,
    running_serve_process,
    stack_manifest,
    stored_snapshot,
)

MODES = ("plain", "stub", "check", "streamed", "observe", "rewrite")
UPSTREAM = "bench"


# -- the SSE sender


async def _send_stream(writer: asyncio.StreamWriter, chunks: int, interval_s: float) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    for i in range(chunks):
        if i:
            await asyncio.sleep(interval_s)
        event = b'data: {"object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"w"}}],"t":%d}\n\n'
        data = event % time.perf_counter_ns()
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await writer.drain()
    usage = b'data: {"object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}}\n\ndata: [DONE]\n\n'
    tail = usage % (chunks, chunks + 8)
    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
    await writer.drain()


async def _sender(port: int, chunks: int, interval_ms: float) -> None:
    """The SSE sender (run as `python -m bench.streaming_modes --sender PORT CHUNKS INTERVAL_MS`)."""
    await serve_streams(port, lambda writer: _send_stream(writer, chunks, interval_ms / 1000))


# -- the constant Check


async def _stub_check(port: int) -> None:
    """Answers every Check with the upstream header (run as `python -m bench.streaming_modes --stub-check PORT`)."""
    import grpc
    from envoy.config.core.v3 import base_pb2
    from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

    answer = external_auth_pb2.CheckResponse()
    header = answer.ok_response.headers.add()
    header.header.key, header.header.value = "x-quotagate-upstream", UPSTREAM
    header.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

    class Constant(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
        async def Check(self, request: object, context: object) -> object:
            return answer

    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Constant(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


@contextmanager
def _running_helper(*args: str) -> Iterator[None]:
    """This module in another process, in one of its helper roles, until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.streaming_modes", *args], stdout=subprocess.PIPE, text=True
    )
    try:
        if process.stdout is None or process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"bench helper {args[0]} did not start")
        yield
    finally:
        process.terminate()
        process.wait()


# -- the client


@dataclass
class Samples:
    ttft_ms: list[float]
    delivery_ms: list[float]


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, samples: Samples) -> None:
    sent = time.perf_counter_ns()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"the gateway answered {head.splitlines()[0]!r}")
    buffered = b""
    first = True
    while (size := int((await reader.readline()).split(b";")[0], 16)) > 0:
        buffered += (await reader.readexactly(size + 2))[:-2]
        now = time.perf_counter_ns()
        *events, buffered = buffered.split(b"\n\n")
        for event in events:
            stamp = event.rfind(b'"t":')
            if stamp < 0:
                continue
            if first:
                samples.ttft_ms.append((now - sent) / 1e6)
                first = False
            samples.delivery_ms.append((now - int(event[stamp + 4 : event.rfind(b"}")])) / 1e6)
    await reader.readline()


def _request(port: int, credential: str, *, include_usage: bool) -> bytes:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    raw = orjson.dumps(body)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {credential}\r\nx-quotagate-upstream: {UPSTREAM}\r\ncontent-length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


async def _measure(port: int, request: bytes, requests: int, warmup: int) -> Samples:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    samples = Samples([], [])
    for _ in range(warmup):
        await _one(reader, writer, request, Samples([], []))
    for _ in range(requests):
        await _one(reader, writer, request, samples)
    writer.close()
    return samples


# -- the Envoy configuration of each mode


def _filters(config: dict[str, Any]) -> list[dict[str, Any]]:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters: list[dict[str, Any]] = manager["http_filters"]
    return filters


def _keep(*names: str) -> Callable[[dict[str, Any]], None]:
    def adapt(config: dict[str, Any]) -> None:
        _filters(config)[:] = [f for f in _filters(config) if f["name"] in names]

    return adapt


def _shipped(config: dict[str, Any]) -> None:
    """`quotagate envoy render` as it is."""


def _wait_for_every_chunk(config: dict[str, Any]) -> None:
    (metering,) = [f for f in _filters(config) if f["name"] == "quotagate.metering"]
    metering["typed_config"]["observability_mode"] = False
    metering["typed_config"].pop("deferred_close_timeout")


ADAPT: dict[str, Callable[[dict[str, Any]], None]] = {
    "plain": _keep("envoy.filters.http.router"),
    "stub": _keep("envoy.filters.http.ext_authz", "envoy.filters.http.router"),
    "check": _keep("envoy.filters.http.ext_authz", "envoy.filters.http.router"),
    "streamed": _wait_for_every_chunk,
    "observe": _shipped,
    "rewrite": _shipped,
}


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def _no_limits(doc: dict[str, Any]) -> None:
    """Limits stay (every Check reserves, as in production) but never refuse during the run."""
    for quota in doc["organizations"][0]["quotas"]:
        quota.update({k: 10**9 for k in ("rpm_limit", "tpm_limit") if k in quota})
        if "monthly_spend_limit" in quota:
            quota["monthly_spend_limit"] = 10**6
    gateway = doc["deployment"]["gateway"]
    gateway["upstreams"] = [{**gateway["upstreams"][0], "name": UPSTREAM}]
    gateway["routes"] = [{**r, "upstream": UPSTREAM} for r in gateway["routes"] if r["provider"] == "openai"]


def run(args: argparse.Namespace) -> list[tuple[str, Samples]]:
    results = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qg-bench-")))
        sender, stub = free_port(), free_port()
        stack.enter_context(_running_helper("--sender", str(sender), str(args.chunks), str(args.interval_ms)))
        stack.enter_context(_running_helper("--stub-check", str(stub)))
        settings = load_settings(home=work / "home")
        manifest = stack_manifest(f"127.0.0.1:{sender}", edit=_no_limits)
        credential = prepare_home(settings, manifest, "demo-key")
        serve = stack.enter_context(running_serve_process(work / "home", log_path=work / "serve.log"))
        for mode in args.modes:
            listen, admin = free_port(), free_port()
            options = RenderOptions(
                listen=("127.0.0.1", listen), grpc_endpoints=(serve.grpc_address,), admin_port=admin
            )
            config = copy.deepcopy(render_envoy_config(stored_snapshot(settings), options))
            ADAPT[mode](config)
            request = _request(listen, credential, include_usage=mode != "rewrite")
            with running_envoy(
                config, workdir=work / mode, listen_port=listen, admin_port=admin, concurrency=1, log_level="warn"
            ):
                samples = asyncio.run(_measure(listen, request, args.requests, args.warmup))
            results.append((mode, samples))
            print(f"{mode}: done", file=sys.stderr)
    return results


def table(results: list[tuple[str, Samples]]) -> str:
    base = dict(results).get("plain")
    lines = [
        "| mode | TTFT p50 (ms) | TTFT p99 | chunk delivery p50 (ms) | delivery p99 | TTFT overhead p50 | chunk overhead p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, s in results:
        ttft50, deliv50 = _percentile(s.ttft_ms, 50), _percentile(s.delivery_ms, 50)
        over = (
            f"{ttft50 - _percentile(base.ttft_ms, 50):+.3f} | {deliv50 - _percentile(base.delivery_ms, 50):+.3f}"
            if base
            else "- | -"
        )
        lines.append(
            f"| {mode} | {ttft50:.3f} | {_percentile(s.ttft_ms, 99):.3f} | {deliv50:.3f} | "
            f"{_percentile(s.delivery_ms, 99):.3f} | {over} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--sender":
        asyncio.run(_sender(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--stub-check":
        import uvloop

        uvloop.run(_stub_check(int(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per mode")
    parser.add_argument("--warmup", type=int, default=20, help="requests per mode before measuring")
    parser.add_argument("--chunks", type=int, default=20, help="SSE content chunks per response")
    parser.add_argument("--interval-ms", type=float, default=2.0, help="time between chunks at the sender")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES), help="comma-separated subset")
    args = parser.parse_args()
    results = run(args)
    print(f"{args.requests} requests x {args.chunks} chunks every {args.interval_ms} ms per mode\n")
    print(table(results))


if __name__ == "__main__":
    main()
