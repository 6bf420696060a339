"""The decision service alone: Check without Envoy, the upstream or metering.

* core: `gatekeeper.check` called in this process, one call at a time (the decision itself: authenticate,
  parse, route, authorize, reserve every limit; no transport);
* Check over HTTP (what Envoy calls): wrk straight at `quotagate serve --check`, with the request Envoy
  sends (path prefix, client address header, body); 16 connections for calls/s, 1 for the latency;
* Check over gRPC: a prebuilt CheckRequest (as Envoy packs it) to `quotagate serve --grpc`: h2load
  (C, 16 calls in flight on one connection) for calls/s when installed, and a Python client one call
  at a time for the latency (which then includes the client's own gRPC cost, ~0.1 ms).

Every allowed Check takes a reservation that is never settled (no response follows); the bench
manifest's limits are far out of reach, and the reservations expire.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson

from bench.loadgen import percentiles
from bench.targets import CHAT_BODY
from bench.wrkrun import saturate
from ext_authz.http_contract import CLIENT_IP_HEADER, PATH_PREFIX
from quotagate.gateway.outcome import Allow, CheckInput
from quotagate.runtime import open_runtime
from quotagate.settings import Settings


def _headers(credential: str) -> dict[str, str]:
    return {
        "host": "127.0.0.1:10000",
        "content-type": "application/json",
        "accept": "application/json",
        "authorization": f"Bearer {credential}",
        "x-forwarded-proto": "http",
        "x-request-id": "5f0c6a1e-7d4c-4c1e-9f44-2b3a9d7e0c11",
        "x-forwarded-for": "192.0.2.2",
        "x-envoy-external-address": "127.0.0.1",
        "x-envoy-auth-partial-body": "false",
    }


def core(settings: Settings, credential: str, *, calls: int) -> dict[str, Any]:
    """gatekeeper.check in process, sequentially: per-call time and calls/s of one core."""

    async def run() -> dict[str, Any]:
        runtime = open_runtime(settings)
        await runtime.start()
        try:
            body = orjson.dumps(CHAT_BODY)
            make = lambda: CheckInput(  # noqa: E731
                "POST", "/v1/chat/completions", _headers(credential), body, client_ip="127.0.0.1", front_door="envoy"
            )
            for _ in range(200):
                assert isinstance(await runtime.gatekeeper.check(make()), Allow)
            took = []
            started = time.perf_counter()
            for _ in range(calls):
                request = make()
                t = time.perf_counter_ns()
                await runtime.gatekeeper.check(request)
                took.append((time.perf_counter_ns() - t) / 1e6)
            elapsed = time.perf_counter() - started
            return {"calls_per_s": calls / elapsed, "latency_ms": percentiles(took)}
        finally:
            await runtime.stop()

    import uvloop

    return uvloop.run(run())


def http_check_request(port: int, credential: str) -> bytes:
    """The authorization request Envoy sends to `quotagate serve --check` on `port`."""
    body = orjson.dumps(CHAT_BODY)
    headers = {
        **_headers(credential),
        "host": f"127.0.0.1:{port}",
        CLIENT_IP_HEADER: "127.0.0.1",
        "content-length": str(len(body)),
    }
    head = f"POST {PATH_PREFIX}/v1/chat/completions HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


def http_check(port: int, credential: str, work: Path, *, duration: float) -> dict[str, Any]:
    request = work / f"check-http-{port}.req"
    request.write_bytes(http_check_request(port, credential))
    busy = saturate(port, request, connections=16, duration=duration, warmup=1)
    one = saturate(port, request, connections=1, duration=max(2.0, duration / 2))
    return {"calls_per_s": busy["rps"], "busy": busy, "latency_ms": one["latency_ms"], "tool": busy["tool"]}


def grpc_check_request(credential: str) -> Any:
    from envoy.service.auth.v3 import external_auth_pb2

    request = external_auth_pb2.CheckRequest()
    source = request.attributes.source.address.socket_address
    source.address, source.port_value = "127.0.0.1", 50000
    http = request.attributes.request.http
    http.method, http.path, http.host, http.scheme, http.protocol = (
        "POST",
        "/v1/chat/completions",
        "127.0.0.1:10000",
        "http",
        "HTTP/1.1",
    )
    body = orjson.dumps(CHAT_BODY)
    for key, value in {
        **_headers(credential),
        ":authority": "127.0.0.1:10000",
        ":method": "POST",
        ":path": "/v1/chat/completions",
        ":scheme": "http",
        "content-length": str(len(body)),
    }.items():
        http.headers[key] = value
    http.raw_body = body
    http.size = len(body)
    return request


def grpc_check(address: str, credential: str, work: Path, *, duration: float, calls: int) -> dict[str, Any]:
    import grpc
    from envoy.service.auth.v3 import external_auth_pb2_grpc

    request = grpc_check_request(credential)
    with grpc.insecure_channel(address) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        for _ in range(200):
            assert stub.Check(request, timeout=5).status.code == 0
        took = []
        for _ in range(calls):
            t = time.perf_counter_ns()
            stub.Check(request, timeout=5)
            took.append((time.perf_counter_ns() - t) / 1e6)
    result: dict[str, Any] = {
        "latency_ms": percentiles(took),
        "latency_client": "Python grpc (sync), one call at a time",
    }
    if shutil.which("h2load"):
        payload = request.SerializeToString()
        data = work / "check.grpc"
        data.write_bytes(b"\x00" + len(payload).to_bytes(4, "big") + payload)
        argv = [
            "h2load", "-c", "1", "-m", "16", "-t", "1", "-D", str(max(1, round(duration))), "--warm-up-time", "1",
            "-d", str(data), "-H", "content-type: application/grpc", "-H", "te: trailers",
            f"http://{address}/envoy.service.auth.v3.Authorization/Check",
        ]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        rps = _h2load_rps(out.stdout)
        result.update(calls_per_s=rps, tool="h2load -c1 -m16", raw=out.stdout[-400:])
    else:  # a Python client would measure itself as much as the server
        result.update(calls_per_s=None, tool="h2load not installed")
    return result


def _h2load_rps(text: str) -> float | None:
    import re

    match = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", text)
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", text)
    if match is None or ok is None or int(ok.group(2)) > 0:
        return None
    return float(match.group(1))
