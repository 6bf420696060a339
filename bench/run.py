"""`make bench`: Quotagate against the floor (the upstream directly, plain Envoy) and LiteLLM, side by side, in one run.

    .venv/bin/python -m bench.run [--quick] [--only SCENARIO,...] [--skip-litellm] [--no-install] [--keep]

Writes bench/results/latest.md (the report) and bench/results/<UTC time>.json (every figure). Every
scenario gets the same client, the same upstream and the same request body, on loopback:

* upstream    an Envoy `direct_response` with a realistic chat completion (never the bottleneck), and a
              stamping SSE sender for streams (bench/upstream.py); the client talks to it directly
* envoy       plain Envoy (the rendered configuration without the ext_authz/ext_proc filters)
* quotagate   Envoy + `quotagate serve` on the embedded backends (SQLite, in-process counters), Check over
              gRPC as `quotagate up` deploys it; `quotagate-http` the same process with Check over HTTP
              (`quotagate up --check-port`)
* pg-redis-1w / pg-redis-2w  the same on PostgreSQL + Redis (a fresh database and key prefix), 1 or 2 workers
* mitmproxy   mitmdump + the Quotagate addon (embedded backends)
* litellm     LiteLLM's proxy (its own virtual environment, exact pin, master key) -> the same upstream

Workloads: closed-loop saturation (wrk), open-loop fixed rates (bench/loadgen.py, latency from the
scheduled send), streams (TTFT and per-chunk delivery), the decision service alone (bench/decision.py),
CPU per 1,000 requests and peak RSS per process (/proc), and a bounded soak (bench/soak.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import decision, report
from bench.procs import CpuMeter, machine_info
from bench.targets import (
    KEY_ID,
    LITELLM_VERSION,
    REPO,
    Backend,
    LiteLLM,
    Target,
    Upstream,
    embedded_backend,
    metering_streamed,
    never_refuse,
    pg_redis_backend,
    process,
    running_gateway_envoy,
    running_mitmdump,
    running_plain_envoy,
    running_serve,
    running_upstream,
    wait_port,
)
from bench.wrkrun import have_wrk, saturate
from quotagate.settings import load_settings
from tests.support.envoy import envoy_binary, free_port, prepare_home, stack_manifest

RESULTS = REPO / "bench" / "results"
VENVS = REPO / "bench" / ".venvs"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
SCENARIOS = (
    "upstream",
    "envoy",
    "quotagate",
    "quotagate-http",
    "pg-redis-1w",
    "pg-redis-2w",
    "mitmproxy",
    "litellm",
)


@dataclass
class Plan:
    saturation_s: float
    connections: int
    rates: tuple[float, ...]
    open_s: float
    warmup_s: float
    stream_requests: int
    chunks: int
    interval_ms: float
    decision_s: float
    decision_calls: int
    soak_s: float
    envoy_concurrency: int

    @classmethod
    def full(cls) -> Plan:
        return cls(8, 16, (100.0, 500.0), 8, 1, 80, 50, 2.0, 4, 3000, 120, 2)

    @classmethod
    def quick(cls) -> Plan:
        return cls(3, 16, (100.0, 500.0), 3, 0.5, 25, 50, 2.0, 2, 1000, 30, 2)


@dataclass
class Run:
    plan: Plan
    work: Path
    upstream: Upstream
    results: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f}s] {text}"
        self.log.append(line)
        print(line, file=sys.stderr, flush=True)


# -- the workloads on one target ---------------------------------------------------------------------


def measure(run: Run, target: Target, *, stream: bool = True, json_load: bool = True) -> dict[str, Any]:
    plan = run.plan
    components = [*target.components, *(c for c in run.upstream.components if c.name == "upstream")]
    out: dict[str, Any] = {"label": target.label, "notes": list(target.notes)}
    request = run.work / f"{target.key}.req"
    request.write_bytes(target.request())
    if json_load:
        saturate(target.port, request, connections=plan.connections, duration=max(1.0, plan.warmup_s))  # warm-up
        meter = CpuMeter(components)
        before = metering_stats(target)
        meter.start()
        sat = saturate(target.port, request, connections=plan.connections, duration=plan.saturation_s)
        used = meter.stop()
        note_metering(sat, target, before)
        done = max(1, sat["completed"])
        sat["cpu_s_per_1000"] = {name: used[name] / done * 1000 for name in used}
        out["saturation"] = sat
        run.say(
            f"{target.key}: saturation {sat['rps']:,.0f} req/s (errors {sat['errors']}, non-2xx {sat['non_2xx']}"
            f"{_metered(sat)})"
        )
        out["open"] = {}
        for rate in plan.rates:
            if sat["rps"] < rate:
                out["open"][str(int(rate))] = {"skipped": f"over capacity ({sat['rps']:,.0f} req/s at saturation)"}
                continue
            before = metering_stats(target)
            meter.start()
            result = open_loop(run, target.port, request, rate)
            used = meter.stop()
            note_metering(result, target, before)
            result["cpu_s_per_1000"] = {n: used[n] / max(1, result["completed"]) * 1000 for n in used}
            out["open"][str(int(rate))] = result
            lat = result["latency_ms"]
            run.say(
                f"{target.key}: {rate:.0f} req/s p50 {lat.get('p50', 0):.3f} ms p99 {lat.get('p99', 0):.3f} ms "
                f"(errors {result['errors']}, timeouts {result['timeouts']}, non-2xx {result['non_2xx']}"
                f"{_metered(result)})"
            )
    if stream:
        out["stream"] = streams(run, target)
    for c in components:
        c.sample_memory()
    out["peak_rss_mb"] = {c.name: {str(p): round(v, 1) for p, v in c.peak_rss_mb.items()} for c in target.components}
    return out


def metering_stats(target: Target) -> dict[str, int] | None:
    """Requests Envoy admitted (its ext_authz ok count) and responses Quotagate metered (access-log lines that are
    not refusals). A throughput part of whose responses went unmetered (the process fell behind, and Envoy reset
    their metering streams) is not a throughput of the gateway."""
    admin, log = target.extra.get("envoy_admin"), target.extra.get("serve_log")
    if admin is None or log is None:
        return None
    stats = httpx.get(f"{admin}/stats?filter=^http\\.quotagate\\.ext_authz\\.ok$").text
    admitted = sum(int(line.split(": ", 1)[1]) for line in stats.splitlines() if ": " in line)
    with Path(log).open("rb") as lines:
        metered = sum(1 for line in lines if line.startswith(b'{"time"') and b'"cost_status":"denied"' not in line)
    return {"admitted": admitted, "metered": metered}


def note_metering(result: dict[str, Any], target: Target, before: dict[str, int] | None) -> None:
    """Add to `result` what was admitted and metered since `before` (once the last metering streams closed)."""
    if before is None:
        return
    time.sleep(2.0)  # the last responses' metering streams close (deferred_close_timeout) and finish
    after = metering_stats(target) or before
    result["metering"] = {k: after[k] - before[k] for k in before}


def _metered(result: dict[str, Any]) -> str:
    m = result.get("metering")
    return f", metered {m['metered']:,} of {m['admitted']:,} admitted" if m else ""


def open_loop(run: Run, port: int, request: Path, rate: float) -> dict[str, Any]:
    plan = run.plan
    argv = [
        sys.executable, "-m", "bench.loadgen", "open", "--port", str(port), "--request", str(request),
        "--rate", str(rate), "--duration", str(plan.open_s), "--warmup", str(plan.warmup_s),
        "--connections", "16", "--max-connections", "512", "--grace", "5",
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=plan.open_s + plan.warmup_s + 60)
    if out.returncode != 0:
        raise RuntimeError(f"open loop failed: {out.stderr[-1500:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def streams(run: Run, target: Target) -> dict[str, Any]:
    plan = run.plan
    request = run.work / f"{target.key}.stream.req"
    request.write_bytes(target.request(stream=True))
    argv = [
        sys.executable, "-m", "bench.loadgen", "stream", "--port", str(target.port), "--request", str(request),
        "--requests", str(plan.stream_requests), "--warmup", "5",
    ]  # fmt: skip
    budget = (plan.stream_requests + 5) * (plan.chunks * plan.interval_ms / 1000 + 0.5) + 60
    out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=budget)
    if out.returncode != 0:
        raise RuntimeError(f"streams failed: {out.stderr[-1500:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    run.say(
        f"{target.key}: streams TTFT p50 {result['ttft_ms'].get('p50', 0):.3f} ms, "
        f"chunk delivery p50 {result['delivery_ms'].get('p50', 0):.3f} ms ({result['chunks']} chunks)"
    )
    return result


# -- scenarios ---------------------------------------------------------------------------------------


def upstream_target(upstream: Upstream) -> Target:
    return Target("upstream", "upstream directly (floor)", upstream.port, "none", [])


def scenario(run: Run, key: str, body: Callable[[], dict[str, Any]]) -> None:
    run.say(f"== {key}")
    t = time.monotonic()
    try:
        run.results.setdefault("scenarios", {})[key] = body()
    except Exception as exc:  # one broken scenario must not lose the others
        run.say(f"{key} FAILED: {exc}")
        run.results.setdefault("failures", {})[key] = "".join(traceback.format_exception(exc))[-3000:]
    run.results.setdefault("timing", {})[key] = round(time.monotonic() - t, 1)


def quotagate_scenarios(run: Run, backend: Backend, selected: set[str]) -> None:
    """Embedded backends, one `quotagate serve` (gRPC and Check over HTTP): Envoy with Check over gRPC (the
    default) and its STREAMED-metering variant, then Envoy with Check over HTTP (`quotagate up --check-port`)."""
    if not selected & {"quotagate", "quotagate-http"}:
        return
    with running_serve(run.work, backend, workers=1, check="http", tag="embedded") as serve:
        if "quotagate" in selected:

            def default() -> dict[str, Any]:
                with running_gateway_envoy(
                    run.work, backend, serve, key="quotagate", label="Envoy + Quotagate (embedded)",
                    concurrency=run.plan.envoy_concurrency,
                ) as target:  # fmt: skip
                    result = measure(run, target)
                with running_gateway_envoy(
                    run.work, backend, serve, key="quotagate-streamed", label="", adapt=metering_streamed,
                    concurrency=run.plan.envoy_concurrency,
                ) as target:  # fmt: skip
                    result["stream_metering_streamed"] = streams(run, target)
                return result

            scenario(run, "quotagate", default)
        if "quotagate-http" in selected:

            def over_http() -> dict[str, Any]:
                with running_gateway_envoy(
                    run.work, backend, serve, key="quotagate-http", label="Envoy + Quotagate (embedded), Check over HTTP",
                    check_over_http=True, concurrency=run.plan.envoy_concurrency,
                ) as target:  # fmt: skip
                    return measure(run, target)

            scenario(run, "quotagate-http", over_http)


def pg_redis_scenarios(run: Run, selected: set[str], pg_url: str, redis_url: str) -> None:
    wanted = [k for k in ("pg-redis-1w", "pg-redis-2w") if k in selected]
    if not wanted:
        return
    with ExitStack() as stack:
        try:
            backend = stack.enter_context(
                pg_redis_backend(run.work, run.upstream.port, pg_admin_url=pg_url, redis_url=redis_url)
            )
        except Exception as exc:
            for key in wanted:
                run.results.setdefault("failures", {})[key] = f"PostgreSQL/Redis unavailable: {exc}"
            run.say(f"PostgreSQL/Redis unavailable, skipped: {exc}")
            return
        for key in wanted:
            workers = 1 if key.endswith("1w") else 2

            def body(workers: int = workers, key: str = key) -> dict[str, Any]:
                with running_serve(run.work, backend, workers=workers, check="http", tag=key) as serve:
                    label = f"Envoy + Quotagate (PostgreSQL + Redis, {workers} worker{'s' if workers > 1 else ''})"
                    with running_gateway_envoy(
                        run.work, backend, serve, key=key, label=label, concurrency=run.plan.envoy_concurrency
                    ) as target:
                        return measure(run, target)

            scenario(run, key, body)


def decision_service(run: Run, embedded: Backend, pg_url: str, redis_url: str) -> None:
    plan = run.plan

    def body() -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["core-embedded"] = decision.core(embedded.settings, embedded.credential, calls=plan.decision_calls)
        run.say(f"decision: core (in-process counters) {out['core-embedded']['calls_per_s']:,.0f} calls/s")
        with running_serve(run.work, embedded, workers=1, check="http", tag="decision") as serve:
            component = serve.component
            cpu = CpuMeter([component])
            cpu.start()
            out["http-embedded"] = decision.http_check(
                int(serve.check[0].rsplit(":", 1)[1]), embedded.credential, run.work, duration=plan.decision_s
            )
            out["http-embedded"]["cpu_s"] = cpu.stop()["quotagate"]
            run.say(
                f"decision: Check over HTTP (in-process counters) {out['http-embedded']['calls_per_s']:,.0f} calls/s"
            )
            out["grpc-embedded"] = decision.grpc_check(
                serve.grpc[0], embedded.credential, run.work, duration=plan.decision_s, calls=plan.decision_calls // 2
            )
            run.say(
                f"decision: Check over gRPC (in-process counters) {out['grpc-embedded'].get('calls_per_s')} calls/s"
            )
            component.sample_memory()
            out["peak_rss_mb"] = max(component.peak_rss_mb.values(), default=0)
        try:
            with pg_redis_backend(run.work, run.upstream.port, pg_admin_url=pg_url, redis_url=redis_url) as backend:
                out["core-redis"] = decision.core(backend.settings, backend.credential, calls=plan.decision_calls)
                run.say(f"decision: core (Redis counters) {out['core-redis']['calls_per_s']:,.0f} calls/s")
                with running_serve(run.work, backend, workers=1, check="http", tag="decision-redis") as serve:
                    out["http-redis"] = decision.http_check(
                        int(serve.check[0].rsplit(":", 1)[1]), backend.credential, run.work, duration=plan.decision_s
                    )
                    run.say(f"decision: Check over HTTP (Redis) {out['http-redis']['calls_per_s']:,.0f} calls/s")
                    out["grpc-redis"] = decision.grpc_check(
                        serve.grpc[0], backend.credential, run.work, duration=plan.decision_s,
                        calls=plan.decision_calls // 2,
                    )  # fmt: skip
        except Exception as exc:
            out["redis_error"] = str(exc)
        return out

    scenario(run, "decision", body)


def soak(run: Run) -> None:
    plan = run.plan

    def body() -> dict[str, Any]:
        with ExitStack() as stack:
            port = free_port()
            fake = stack.enter_context(
                process([sys.executable, "-m", "quotagate.fake_provider", "--port", str(port), "--record", "0"],
                        log=run.work / "soak" / "fake.log")
            )  # fmt: skip
            wait_port(port, fake)
            home = run.work / "home-soak"
            settings = load_settings(home=home)
            credential = prepare_home(settings, stack_manifest(f"127.0.0.1:{port}", edit=never_refuse), KEY_ID)
            backend = Backend("soak", settings, {"QUOTAGATE_HOME": str(home)}, credential)
            serve = stack.enter_context(running_serve(run.work, backend, workers=1, check="http", tag="soak"))
            target = stack.enter_context(
                running_gateway_envoy(
                    run.work, backend, serve, key="soak", label="soak", concurrency=plan.envoy_concurrency
                )
            )
            watched = list(target.components)
            samples: list[dict[str, Any]] = []

            def sample(t: float) -> None:
                samples.append(
                    {
                        "t": round(t),
                        **{c.name: {"rss_mb": round(sum(c.rss_mb().values()), 1), "fds": c.fds()} for c in watched},
                    }
                )

            argv = [
                sys.executable, "-m", "bench.soak", "--port", str(target.port), "--credential", credential,
                "--duration", str(plan.soak_s),
            ]  # fmt: skip
            started = time.monotonic()
            sample(0)
            driver = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO)
            intervals = []
            assert driver.stdout is not None
            next_sample = started + 10
            for line in driver.stdout:
                data = json.loads(line)
                if data.get("final"):
                    final = data
                    break
                intervals.append(data)
                while time.monotonic() >= next_sample:
                    sample(next_sample - started)
                    next_sample += 10
            else:
                final = {}
            driver.wait(timeout=60)
            time.sleep(2)  # streams the client abandoned are closed by Envoy 1 s later
            sample(time.monotonic() - started)
            for c in watched:
                c.sample_memory()
            peak = {c.name: round(max(c.peak_rss_mb.values(), default=0), 1) for c in watched}
        usage = _usage_rows(home)
        run.say(f"soak: {final.get('counts')} usage rows {usage}")
        return {"samples": samples, "intervals": intervals, "final": final, "peak_rss_mb": peak, "usage_rows": usage}

    scenario(run, "soak", body)


def _usage_rows(home: Path) -> int | None:
    import sqlite3

    try:
        with sqlite3.connect(home / "quotagate.db") as db:
            return int(db.execute("SELECT count(*) FROM usage_events").fetchone()[0])
    except sqlite3.Error:
        return None


# -- set-up ------------------------------------------------------------------------------------------


def prerequisites(run: Run, install: bool) -> None:
    if install:
        script = REPO / "scripts" / "bench-prereqs"
        out = subprocess.run([str(script)], capture_output=True, text=True, timeout=600)
        run.say(f"prerequisites: {out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]}")
    if not have_wrk():
        run.say("wrk not found: saturation runs use bench.loadgen's Python closed loop instead")


def litellm_venv(run: Run) -> Path:
    """bench/.venvs/litellm-<version>, installed once from the hash-pinned lock (bench/litellm.lock)."""
    venv = VENVS / f"litellm-{LITELLM_VERSION}"
    stamp = venv / ".bench-installed"
    lock = REPO / "bench" / "litellm.lock"
    if stamp.exists() and stamp.read_text() == _digest(lock):
        return venv
    run.say(f"installing LiteLLM {LITELLM_VERSION} into {venv.relative_to(REPO)} (once)")
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is needed to install LiteLLM (make install puts it in .venv/bin)")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "sync", "-q", "--python", str(venv / "bin" / "python"), "--only-binary", ":all:", "--require-hashes",
         str(lock)],
        check=True, timeout=600,
    )  # fmt: skip
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    unexpected = sorted(
        p.name for p in site.glob("*.pth") if p.name not in {"distutils-precedence.pth", "_virtualenv.pth"}
    )
    if unexpected:  # the compromised LiteLLM releases shipped a .pth that ran at every interpreter start
        shutil.rmtree(venv, ignore_errors=True)
        raise RuntimeError(f"unexpected .pth files in the LiteLLM environment: {unexpected}")
    stamp.write_text(_digest(lock))
    return venv


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short durations (~3 minutes): a smoke run")
    parser.add_argument("--only", type=lambda s: s.split(","), help=f"subset of {','.join(SCENARIOS)},decision,soak")
    parser.add_argument("--skip-litellm", action="store_true", help="do not install or run LiteLLM")
    parser.add_argument("--no-install", action="store_true", help="do not run scripts/bench-prereqs")
    parser.add_argument("--soak-seconds", type=float, help="override the soak's duration")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.md")
    parser.add_argument("--pg-url", default=os.environ.get("QUOTAGATE_TEST_DATABASE_URL", DEFAULT_PG))
    parser.add_argument("--redis-url", default=os.environ.get("QUOTAGATE_TEST_REDIS_URL", DEFAULT_REDIS))
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan.full()
    if args.soak_seconds is not None:
        plan.soak_s = args.soak_seconds
    selected = set(args.only or [*SCENARIOS, "decision", "soak"])
    if args.skip_litellm:
        selected.discard("litellm")
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="qg-bench-", dir=RESULTS))
    started_at = datetime.now(UTC)
    t0 = time.monotonic()
    info: dict[str, Any] = {}
    with running_upstream(work, chunks=plan.chunks, interval_ms=plan.interval_ms) as upstream:
        run = Run(plan, work, upstream)
        prerequisites(run, install=not args.no_install)
        litellm: LiteLLM | None = None
        if "litellm" in selected:
            try:
                litellm = LiteLLM(work, litellm_venv(run), upstream)  # starts now: it takes 15-40 s to come up
            except Exception as exc:
                run.say(f"LiteLLM unavailable: {exc}")
                run.results.setdefault("failures", {})["litellm"] = str(exc)
        try:
            embedded = embedded_backend(work, upstream.port)
            if "upstream" in selected:
                scenario(run, "upstream", lambda: measure(run, upstream_target(upstream)))
            if "envoy" in selected:

                def plain() -> dict[str, Any]:
                    with running_plain_envoy(work, embedded.settings, plan.envoy_concurrency) as target:
                        return measure(run, target)

                scenario(run, "envoy", plain)
            quotagate_scenarios(run, embedded, selected)
            pg_redis_scenarios(run, selected, args.pg_url, args.redis_url)
            if "mitmproxy" in selected:
                mitm_backend = embedded_backend(work, upstream.port, name="mitmproxy")

                def mitm() -> dict[str, Any]:
                    with running_mitmdump(work, mitm_backend, upstream) as target:
                        return measure(run, target)

                scenario(run, "mitmproxy", mitm)
            if litellm is not None:

                def peer() -> dict[str, Any]:
                    assert litellm is not None
                    target = litellm.ready()
                    result = measure(run, target)
                    result["startup_s"] = litellm.startup_s
                    return result

                scenario(run, "litellm", peer)
                litellm.stop()
                litellm = None
            if "decision" in selected:
                decision_service(run, embedded, args.pg_url, args.redis_url)
            if "soak" in selected:
                soak(run)
        finally:
            if litellm is not None:
                litellm.stop()
        info = machine_info(envoy_binary(), LITELLM_VERSION if "litellm" in run.results.get("scenarios", {}) else None)
    elapsed = time.monotonic() - t0
    run.results.update(
        machine=info,
        started_at=started_at.isoformat(timespec="seconds"),
        elapsed_s=round(elapsed, 1),
        mode="quick" if args.quick else "full",
        plan=plan.__dict__,
        command=" ".join(
            ["make bench", *([f"BENCH_ARGS='{' '.join(argv or sys.argv[1:])}'"] if (argv or sys.argv[1:]) else [])]
        ),
        log=run.log,
    )
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(run.results, indent=1, default=str))
    args.output.write_text(report.render(run.results))
    print(f"wrote {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output} "
          f"in {elapsed / 60:.1f} min", file=sys.stderr)  # fmt: skip
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if run.results.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
