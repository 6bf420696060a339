"""Closed-loop saturation: wrk (C, one thread) with bench/wrk.lua, or bench.loadgen's closed loop without wrk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

LUA = Path(__file__).with_name("wrk.lua")


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def saturate(
    port: int, request_file: Path, *, connections: int, duration: float, warmup: float = 0.0
) -> dict[str, Any]:
    """Requests/s and latency with `connections` connections each sending back to back for `duration` s."""
    if not have_wrk():
        return _python(port, request_file, connections=connections, duration=duration, warmup=warmup)
    if warmup > 0:
        _wrk(port, request_file, connections, warmup)
    raw = _wrk(port, request_file, connections, duration)
    seconds = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "tool": "wrk",
        "connections": connections,
        "duration_s": seconds,
        "completed": raw["requests"],
        "rps": raw["requests"] / seconds,
        "non_2xx": raw["status"],
        "errors": errors,
        "latency_ms": {k: raw[f"{k}_us"] / 1000 for k in ("p50", "p90", "p99", "p999", "max", "mean")},
    }


def _wrk(port: int, request_file: Path, connections: int, duration: float) -> dict[str, Any]:
    argv = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
        "-s", str(LUA), f"http://127.0.0.1:{port}/",
    ]  # fmt: skip
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        env={**os.environ, "BENCH_REQUEST_FILE": str(request_file)},
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    result: dict[str, Any] = json.loads(line)
    return result


def _python(port: int, request_file: Path, *, connections: int, duration: float, warmup: float) -> dict[str, Any]:
    argv = [
        sys.executable, "-m", "bench.loadgen", "closed", "--port", str(port), "--request", str(request_file),
        "--connections", str(connections), "--duration", str(duration), "--warmup", str(warmup),
    ]  # fmt: skip
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + warmup + 60, cwd=Path(__file__).parents[1]
    )
    result: dict[str, Any] = json.loads(out.stdout)
    result["tool"] = "bench.loadgen closed"
    return result
