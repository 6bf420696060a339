"""bench/results/latest.md from one run's figures (bench/run.py writes them to bench/results/<time>.json too).

.venv/bin/python -m bench.report bench/results/<time>.json > latest.md     (re-render a stored run)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Targets (issue 10): the goal, not a test assertion.
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_SATURATION_X = 20.0
TARGET_TTFT_MS = 1.0
TARGET_CHUNK_MS = 0.2
TARGET_RSS_MB = 150.0
UNMETERED_SLACK = 32  # requests in flight at the edges of a saturation window (16 connections, twice)

ORDER = ["upstream", "envoy", "quotagate", "quotagate-http", "pg-redis-1w", "pg-redis-2w", "mitmproxy", "litellm"]
SHORT = {
    "upstream": "upstream directly (floor)",
    "envoy": "plain Envoy (floor)",
    "quotagate": "**Envoy + Quotagate, embedded** (default: Check over gRPC)",
    "quotagate-http": "**Envoy + Quotagate, embedded, Check over HTTP** (`--check-port`)",
    "pg-redis-1w": "Envoy + Quotagate, PostgreSQL + Redis, 1 worker",
    "pg-redis-2w": "Envoy + Quotagate, PostgreSQL + Redis, 2 workers",
    "mitmproxy": "mitmproxy + Quotagate addon",
    "litellm": "LiteLLM proxy (master key)",
}
QUOTAGATE_COMPONENTS = ("quotagate", "mitmdump")


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _n(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _x(value: float | None, base: float | None, digits: int = 2) -> str:
    if value is None or not base:
        return "n/a"
    return f"{value / base:.{digits}f}×"


def _signed(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}"


def _pair(a: float | None, b: float | None, digits: int = 3) -> str:
    return f"{_signed(a, digits)} / {_signed(b, digits)}"


class Figures:
    def __init__(self, results: dict[str, Any]) -> None:
        self.r = results
        self.s: dict[str, Any] = results.get("scenarios", {})
        self.rates = [str(int(r)) for r in results.get("plan", {}).get("rates", (100, 500))]
        self.low = self.rates[0] if self.rates else "100"  # the lowest and highest offered rates
        self.high = self.rates[-1] if self.rates else "500"

    def has(self, key: str) -> bool:
        return key in self.s

    def sat(self, key: str) -> float | None:
        value = _get(self.s, key, "saturation", "rps")
        return float(value) if value is not None else None

    def unmetered(self, key: str) -> str | None:
        return _unmetered(_get(self.s, key, "saturation", "metering"))

    def lat(self, key: str, rate: str, q: str) -> float | None:
        return _get(self.s, key, "open", rate, "latency_ms", q)

    def added(self, key: str, rate: str, q: str, base: str = "envoy") -> float | None:
        a, b = self.lat(key, rate, q), self.lat(base, rate, q)
        return None if a is None or b is None else a - b

    def stream(self, key: str, what: str, q: str, variant: str = "stream") -> float | None:
        return _get(self.s, key, variant, what, q)

    def stream_over(self, key: str, what: str, q: str, variant: str = "stream", base: str = "envoy") -> float | None:
        a, b = self.stream(key, what, q, variant), self.stream(base, what, q)
        return None if a is None or b is None else a - b

    def cpu_total(self, key: str) -> float | None:
        cpu = _get(self.s, key, "saturation", "cpu_s_per_1000")
        if not cpu:
            return None
        return sum(v for name, v in cpu.items() if name != "upstream")

    def rss_by_process(self, key: str) -> dict[str, list[float]]:
        """Peak RSS per process of each component of a measured target (pid -> MB); other shapes are not targets."""
        peaks = _get(self.s, key, "peak_rss_mb")
        if not isinstance(peaks, dict):
            return {}
        return {name: sorted(per.values(), reverse=True) for name, per in peaks.items() if isinstance(per, dict)}


def _unmetered(m: dict[str, int] | None) -> str | None:
    """'N of M' when responses Envoy admitted went unmetered (more than the requests in flight at the window's
    edges could explain)."""
    if not m:
        return None
    missing = m["admitted"] - m["metered"]
    return f"{missing:,} of {m['admitted']:,}" if missing > UNMETERED_SLACK else None


def _unmetered_cell(result: dict[str, Any]) -> str:
    """A table cell: 'N of M', '0', or '—' where nothing was measured (no Quotagate behind Envoy)."""
    if "metering" not in result:
        return "—"
    return _unmetered(result["metering"]) or "0"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


# The two ways Quotagate ships behind Envoy: Check over gRPC (the default) and over HTTP (`--check-port`).
SHIPPED = (("quotagate", "default: Check over gRPC"), ("quotagate-http", "Check over HTTP (`--check-port`)"))


def summary(f: Figures) -> list[str]:
    shipped = [(key, name) for key, name in SHIPPED if f.has(key)]
    lines = [
        "| target (issue 10) | goal | " + " | ".join(name for _, name in shipped) + " | LiteLLM |",
        "|---|---|" + "---|" * len(shipped) + "---|",
    ]
    high, low = f.high, f.low

    def verdict(value: float | None, limit: float, unit: str, lower: bool = True) -> str:
        ok = None if value is None else (value <= limit if lower else value >= limit)
        shown = _signed(value, 3) if unit == "ms" else _n(value)
        return f"{shown} {unit} {_met(ok)}"

    def cell(key: str, value: float | None, limit: float, unit: str, lower: bool, rate: str | None) -> str:
        if value is None and rate is not None and _get(f.s, key, "open", rate, "skipped"):
            return f"over capacity (saturates at {_n(f.sat(key))} req/s) {_met(False)}"
        lost = _unmetered(_get(f.s, key, "open", rate, "metering")) if rate is not None else None
        if lost:
            return f"{_signed(value, 3)} {unit}, but {lost} responses unmetered {_met(False)}"
        return verdict(value, limit, unit, lower)

    def row(
        name: str,
        goal: str,
        measure: Any,
        limit: float,
        unit: str,
        peer: str,
        lower: bool = True,
        rate: str | None = None,
    ) -> None:
        cells = " | ".join(cell(key, measure(key), limit, unit, lower, rate) for key, _ in shipped)
        lines.append(f"| {name} | {goal} | {cells} | {peer} |")

    ll50, ll99 = f.added("litellm", low, "p50"), f.added("litellm", low, "p99")
    row(f"added latency p50 over plain Envoy, {high} req/s, full policy + metering", f"≤ {TARGET_ADDED_P50_MS} ms",
        lambda k: f.added(k, high, "p50"), TARGET_ADDED_P50_MS, "ms",
        f"adds {_signed(ll50, 3)} ms at {low} req/s" if ll50 is not None else "over capacity", rate=high)  # fmt: skip
    row(f"added latency p99 over plain Envoy, {high} req/s", f"≤ {TARGET_ADDED_P99_MS} ms",
        lambda k: f.added(k, high, "p99"), TARGET_ADDED_P99_MS, "ms",
        f"adds {_signed(ll99, 3)} ms at {low} req/s" if ll99 is not None else "over capacity", rate=high)  # fmt: skip
    ls = f.sat("litellm")
    cells = []
    for key, _ in shipped:
        qs = f.sat(key)
        ratio = qs / ls if qs and ls else None
        lost = f.unmetered(key)
        if lost:  # not a throughput of the gateway: part of it went unmetered
            cells.append(f"{_n(qs)} req/s, but {lost} responses unmetered (past capacity) {_met(False)}")
            continue
        cells.append(
            f"{_n(qs)} req/s = {_n(ratio, 1)}× {_met(None if ratio is None else ratio >= TARGET_SATURATION_X)}"
        )
    lines.append(
        f"| saturation throughput vs LiteLLM (same machine, same run) | ≥ {TARGET_SATURATION_X:.0f}× | "
        + " | ".join(cells)
        + f" | {_n(ls)} req/s |"
    )
    lt, lc = f.stream_over("litellm", "ttft_ms", "p50"), f.stream_over("litellm", "delivery_ms", "p50")
    row("TTFT overhead p50 over plain Envoy", f"≤ {TARGET_TTFT_MS} ms", lambda k: f.stream_over(k, "ttft_ms", "p50"),
        TARGET_TTFT_MS, "ms", f"{_signed(lt, 3)} ms" if lt is not None else "n/a")  # fmt: skip
    row("inter-chunk overhead p50 over plain Envoy", f"≤ {TARGET_CHUNK_MS} ms",
        lambda k: f.stream_over(k, "delivery_ms", "p50"), TARGET_CHUNK_MS, "ms",
        f"{_signed(lc, 3)} ms" if lc is not None else "n/a")  # fmt: skip
    ll_rss = max(f.rss_by_process("litellm").get("litellm", [0]) or [0]) or None

    def peak(key: str) -> float | None:
        values = [v for name, vals in f.rss_by_process(key).items() if name in QUOTAGATE_COMPONENTS for v in vals]
        return max(values) if values else None

    cells = " | ".join(verdict(peak(key), TARGET_RSS_MB, "MB") for key, _ in shipped)
    lines.append(
        f"| peak RSS of the Quotagate process in that scenario | ≤ {TARGET_RSS_MB:.0f} MB | {cells} | "
        + (f"{_n(ll_rss, 0)} MB" if ll_rss else "n/a")
        + " |"
    )
    return lines


def headline(f: Figures) -> list[str]:
    high = f.high
    lines = [
        f"| scenario | saturation req/s | × upstream | × plain Envoy | × LiteLLM | added p50 / p99 at {high} req/s (ms) "
        "| TTFT overhead p50 (ms) | CPU s / 1k req | peak RSS / process (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in ORDER:
        if not f.has(key):
            continue
        sat = f.sat(key)
        base = "upstream" if key in ("upstream", "envoy") else "envoy"
        a50, a99 = f.added(key, high, "p50", base=base), f.added(key, high, "p99", base=base)
        skipped = _get(f.s, key, "open", high, "skipped")
        added = "over capacity" if skipped else (_pair(a50, a99, 2) if key != "upstream" else "—")
        ttft = f.stream_over(key, "ttft_ms", "p50") if key not in ("upstream", "envoy") else None
        rss = [v for name, vals in f.rss_by_process(key).items() if name != "envoy" for v in vals]
        if key == "envoy":
            rss = f.rss_by_process(key).get("envoy", [])
        lines.append(
            f"| {SHORT.get(key, key)} | {_n(sat)} | {_x(sat, f.sat('upstream'))} | {_x(sat, f.sat('envoy'))} | "
            f"{_x(sat, f.sat('litellm'), 1)} | {added} | {_signed(ttft) if ttft is not None else '—'} | "
            f"{_n(f.cpu_total(key), 3) if key != 'upstream' else '—'} | {', '.join(_n(v, 0) for v in rss) or '—'} |"
        )
    lines.append("")
    lines.append(
        "Added latency is over plain Envoy (the upstream's own row: over the upstream directly); TTFT overhead "
        "over plain Envoy; CPU is every component but the upstream, per 1,000 requests at saturation; RSS is the "
        "peak of each of the scenario's own processes (Envoy excluded except for plain Envoy)."
    )
    return lines


def saturation_table(f: Figures) -> list[str]:
    lines = [
        "| scenario | req/s | × upstream | × plain Envoy | × LiteLLM | p50 ms | p99 ms | errors / non-2xx "
        "| admitted but not metered |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in ORDER:
        sat = _get(f.s, key, "saturation")
        if not sat:
            continue
        lat = sat["latency_ms"]
        lines.append(
            f"| {SHORT.get(key, key)} | {_n(sat['rps'])} | {_x(sat['rps'], f.sat('upstream'))} | "
            f"{_x(sat['rps'], f.sat('envoy'))} | {_x(sat['rps'], f.sat('litellm'), 1)} | {_n(lat['p50'], 3)} | "
            f"{_n(lat['p99'], 3)} | {sat['errors']} / {sat['non_2xx']} | "
            f"{_unmetered_cell(sat)} |"
        )
    return lines


def open_table(f: Figures) -> list[str]:
    lines = [
        "| scenario | offered req/s | p50 ms | p99 ms | p99.9 ms | added p50 / p99 over upstream | added p50 / p99 over "
        "plain Envoy | p50 × LiteLLM's | achieved req/s | errors / timeouts / non-2xx | admitted but not metered |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate in f.rates:
        for key in ORDER:
            result = _get(f.s, key, "open", rate)
            if result is None:
                continue
            if "skipped" in result:
                lines.append(f"| {SHORT.get(key, key)} | {rate} | {result['skipped']} | | | | | | | | |")
                continue
            lat = result["latency_ms"]
            over_up = _pair(f.added(key, rate, "p50", "upstream"), f.added(key, rate, "p99", "upstream"))
            own = key not in ("upstream", "envoy")
            over_envoy = _pair(f.added(key, rate, "p50"), f.added(key, rate, "p99")) if own else "—"
            lines.append(
                f"| {SHORT.get(key, key)} | {rate} | {_n(lat.get('p50'), 3)} | {_n(lat.get('p99'), 3)} | "
                f"{_n(lat.get('p999'), 3)} | {over_up if key != 'upstream' else '—'} | {over_envoy} | "
                f"{_x(lat.get('p50'), f.lat('litellm', rate, 'p50'), 3)} | {_n(result['achieved_rps'], 0)} | "
                f"{result['errors']} / {result['timeouts']} / {result['non_2xx']} | "
                f"{_unmetered_cell(result)} |"
            )
    return lines


def stream_table(f: Figures) -> list[str]:
    lines = [
        "| scenario | TTFT p50 ms | TTFT p99 | TTFT overhead p50 / p99 over plain Envoy | chunk delivery p50 ms | "
        "delivery p99 | inter-chunk overhead p50 / p99 over plain Envoy | × LiteLLM's overhead (TTFT p50) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(key, "stream", SHORT.get(key, key)) for key in ORDER]
    rows.insert(
        3,
        (
            "quotagate",
            "stream_metering_streamed",
            "Envoy + Quotagate, embedded, metering STREAMED (Envoy waits per chunk)",
        ),
    )
    lt = f.stream_over("litellm", "ttft_ms", "p50")
    for key, variant, label in rows:
        s = _get(f.s, key, variant)
        if not s:
            continue
        t, d = s["ttft_ms"], s["delivery_ms"]
        own = key not in ("upstream", "envoy")
        ttft_over = _pair(f.stream_over(key, "ttft_ms", "p50", variant), f.stream_over(key, "ttft_ms", "p99", variant))
        chunk_over = _pair(
            f.stream_over(key, "delivery_ms", "p50", variant), f.stream_over(key, "delivery_ms", "p99", variant)
        )
        lines.append(
            f"| {label} | {_n(t.get('p50'), 3)} | {_n(t.get('p99'), 3)} | {ttft_over if own else '—'} | "
            f"{_n(d.get('p50'), 3)} | {_n(d.get('p99'), 3)} | {chunk_over if own else '—'} | {_x(f.stream_over(key, 'ttft_ms', 'p50', variant), lt, 3) if own else '—'} |"
        )
    return lines


def resources_table(f: Figures) -> list[str]:
    lines = [
        "| scenario | component | CPU s / 1,000 req (saturation) | × LiteLLM | CPU s / 1,000 req at "
        f"{f.high} req/s | peak RSS MB per process |",
        "|---|---|---:|---:|---:|---:|",
    ]
    ll_cpu = f.cpu_total("litellm")
    high = f.high
    for key in ORDER:
        cpu = _get(f.s, key, "saturation", "cpu_s_per_1000") or {}
        cpu_high = _get(f.s, key, "open", high, "cpu_s_per_1000") or {}
        rss = f.rss_by_process(key)
        for name, value in cpu.items():
            peaks = ", ".join(_n(v, 0) for v in rss.get(name, [])) or "—"
            if name == "upstream":
                peaks = "(shared upstream)"
            lines.append(
                f"| {SHORT.get(key, key)} | {name} | {_n(value, 3)} | {_x(value, ll_cpu)} | "
                f"{_n(cpu_high.get(name), 3) if cpu_high else 'n/a'} | {peaks} |"
            )
    return lines


def decision_table(f: Figures) -> list[str]:
    d = f.s.get("decision")
    if not d:
        return ["(not run)"]
    lines = [
        "| what | backend | calls/s (one process) | p50 ms | p99 ms | measured with |",
        "|---|---|---:|---:|---:|---|",
    ]
    names = {
        "core": "core `gatekeeper.check`, in process",
        "http": "Check over HTTP (`serve --check`)",
        "grpc": "Check over gRPC",
    }
    for what in ("core", "http", "grpc"):
        for backend in ("embedded", "redis"):
            entry = d.get(f"{what}-{backend}")
            if not entry:
                continue
            lat = entry.get("latency_ms", {})
            tool = {
                "core": "one call at a time",
                "http": f"{entry.get('tool', 'wrk')} -c16 (calls/s), -c1 (latency)",
                "grpc": f"{entry.get('tool')} (calls/s); {entry.get('latency_client', '')} (latency)",
            }[what]
            lines.append(
                f"| {names[what]} | {'in-process counters, SQLite' if backend == 'embedded' else 'Redis counters, PostgreSQL'} | "
                f"{_n(entry.get('calls_per_s'), 0)} | {_n(lat.get('p50'), 3)} | {_n(lat.get('p99'), 3)} | {tool} |"
            )
    if "redis_error" in d:
        lines.append(f"\nRedis backend: {d['redis_error']}")
    return lines


def soak_section(f: Figures) -> list[str]:
    s = f.s.get("soak")
    if not s:
        return ["(not run)"]
    samples = s.get("samples", [])
    final = s.get("final", {})
    lines = [
        f"{final.get('seconds', '?')} s through Envoy + Quotagate (embedded, default Check over gRPC) to the fake provider: "
        "40 req/s non-streaming (a new connection each) and 8 streams/s of 20 chunks 20 ms apart; of the streams one "
        "in five abandoned by the client after 5 chunks, one in ten cut by the provider after 5 chunks, about half "
        "without `include_usage` (rewritten). Outcomes: "
        + ", ".join(f"{k} {v}" for k, v in sorted(final.get("counts", {}).items()))
        + f"; usage rows stored: {s.get('usage_rows')}.",
        "",
        "| t (s) | Quotagate RSS MB | Quotagate open fds | Envoy RSS MB | Envoy open fds |",
        "|---:|---:|---:|---:|---:|",
    ]
    for sample in samples:
        q, e = sample.get("quotagate", {}), sample.get("envoy", {})
        lines.append(f"| {sample['t']} | {q.get('rss_mb')} | {q.get('fds')} | {e.get('rss_mb')} | {e.get('fds')} |")
    if len(samples) >= 2:
        first, last = samples[0].get("quotagate", {}), samples[-1].get("quotagate", {})
        lines.append("")
        lines.append(
            f"Quotagate RSS {first.get('rss_mb')} → {last.get('rss_mb')} MB, open fds {first.get('fds')} → "
            f"{last.get('fds')}; peak RSS {s.get('peak_rss_mb', {}).get('quotagate')} MB. "
            f"Non-streaming latency during the soak: p50 {_n(_get(final, 'json_latency_ms', 'p50'), 2)} ms, "
            f"p99 {_n(_get(final, 'json_latency_ms', 'p99'), 2)} ms (new connection per request)."
        )
        lines.append("")
        lines.append(_soak_verdict(samples, final.get("counts", {})))
    return lines


# After the warm-up (the first sample past 10 s), a soak is flat when RSS grows by less than this and fds by at most
# a few (keep-alive connections come and go).
SOAK_RSS_GROWTH = 0.05
SOAK_FD_GROWTH = 4


def _soak_verdict(samples: list[dict[str, Any]], counts: dict[str, int]) -> str:
    warm = [x for x in samples if x["t"] >= 10] or samples
    start, end = warm[0].get("quotagate", {}), warm[-1].get("quotagate", {})
    rss0, rss1 = float(start.get("rss_mb") or 0), float(end.get("rss_mb") or 0)
    fd0, fd1 = int(start.get("fds") or 0), int(end.get("fds") or 0)
    rss_flat = rss0 > 0 and (rss1 - rss0) / rss0 < SOAK_RSS_GROWTH
    fd_flat = fd1 - fd0 <= SOAK_FD_GROWTH
    failed = {k: v for k, v in counts.items() if not k.endswith((":ok", ":abandoned"))}
    return (
        f"Verdict after warm-up (t={warm[0]['t']} → {warm[-1]['t']} s): RSS {rss0:.1f} → {rss1:.1f} MB "
        f"({'flat' if rss_flat else '**grew**'}, limit +{SOAK_RSS_GROWTH:.0%}), open fds {fd0} → {fd1} "
        f"({'flat' if fd_flat else '**grew**'}, limit +{SOAK_FD_GROWTH}), requests not answered as planned: "
        + (", ".join(f"{k} {v}" for k, v in sorted(failed.items())) if failed else "none")
        + "."
    )


def render(results: dict[str, Any]) -> str:
    f = Figures(results)
    plan = results.get("plan", {})
    machine = results.get("machine", {})
    out = [
        "# Quotagate benchmark",
        "",
        f"`{results.get('command', 'make bench')}` — {results.get('mode', '?')} run started {results.get('started_at')}, "
        f"took **{results.get('elapsed_s', 0) / 60:.1f} min**. Every scenario ran in this one run, one after another, "
        "on the same machine; compare ratios, not absolute times (the machine is shared and drifts).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine.items() if k != "interpreter"),
        "",
        "## Targets",
        "",
        *summary(f),
        "",
        "Where a target is missed, what the profiles found and the before/after of the fixes: "
        "[bench/README.md](../README.md#what-the-profiles-found-before--after). LiteLLM runs on its master-key "
        "proxy path (its virtual keys need Prisma, which cannot be installed offline).",
        "",
        "## Headline",
        "",
        *headline(f),
        "",
        "## Non-streaming chat",
        "",
        f"Saturation: closed loop, {plan.get('connections')} connections, {plan.get('saturation_s')} s after a warm-up "
        "(wrk, one thread, the same raw request for every scenario).",
        "",
        *saturation_table(f),
        "",
        f"Fixed offered rates: open loop (bench/loadgen.py; {plan.get('open_s')} s after {plan.get('warmup_s')} s of "
        "warm-up; each request is due at its scheduled time whatever happened before, and its latency runs from that "
        "time, so queueing counts). A scenario whose saturation throughput is below the rate is not offered it.",
        "",
        *open_table(f),
        "",
        "## Streaming chat",
        "",
        f"{plan.get('stream_requests')} streams per scenario, one at a time, each {plan.get('chunks')} chunks "
        f"{plan.get('interval_ms')} ms apart from the stamping SSE sender behind the upstream Envoy (every scenario takes "
        "that same extra hop). TTFT: request sent → first chunk; delivery: the sender's timestamp in each chunk → "
        "its arrival at the client (the same monotonic clock).",
        "",
        *stream_table(f),
        "",
        "## Decision service alone",
        "",
        *decision_table(f),
        "",
        "## CPU and memory per component",
        "",
        *resources_table(f),
        "",
        "## Soak",
        "",
        *soak_section(f),
        "",
    ]
    failures = results.get("failures")
    if failures:
        out += ["## Failures", ""]
        for key, text in failures.items():
            out += [f"### {key}", "", "```", str(text)[-1500:], "```", ""]
    out += ["## Scenario timings", "", ", ".join(f"{k} {v} s" for k, v in results.get("timing", {}).items()), ""]
    return "\n".join(out)


def main() -> None:
    sys.stdout.write(render(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()
