"""What each process of a scenario costs, read from /proc (Linux): CPU seconds, RSS, peak RSS, open files.

A component is a process and its descendants (`quotagate serve --workers 2` is a supervisor and two
workers; LiteLLM may fork its uvicorn worker). CPU is user + system time of every live process of the
tree; peak RSS is the kernel's high-water mark (VmHWM) of each process.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = _read(f"{task}/children")
        found += [int(c) for c in text.split()]
    return found


def tree(pid: int) -> list[int]:
    """pid and all its descendants that are alive now."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if Path(f"/proc/{p}").exists():
            out.append(p)
            todo += children(p)
    return out


def cpu_seconds(pid: int) -> float:
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def status_kb(pid: int, key: str) -> int:
    return status_like(_read(f"/proc/{pid}/status"), key)


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


@dataclass
class Component:
    """A named process tree, e.g. 'envoy', 'quotagate', 'upstream'."""

    name: str
    pid: int
    peak_rss_mb: dict[int, float] = field(default_factory=dict)  # per process, the highest VmHWM seen

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in tree(self.pid))

    def sample_memory(self) -> None:
        for p in tree(self.pid):
            hwm = status_kb(p, "VmHWM") / 1024
            if hwm > self.peak_rss_mb.get(p, 0.0):
                self.peak_rss_mb[p] = hwm

    def rss_mb(self) -> dict[int, float]:
        return {p: status_kb(p, "VmRSS") / 1024 for p in tree(self.pid)}

    def fds(self) -> int:
        return sum(open_fds(p) for p in tree(self.pid))


class CpuMeter:
    """CPU seconds of each component between start() and stop()."""

    def __init__(self, components: list[Component]) -> None:
        self.components = components
        self._start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._start = {c.name: c.cpu() for c in self.components}

    def stop(self) -> dict[str, float]:
        self.used = {c.name: c.cpu() - self._start.get(c.name, 0.0) for c in self.components}
        for c in self.components:
            c.sample_memory()
        return self.used


def _cmd(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return (out.stdout or out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"


def machine_info(envoy: str, litellm_version: str | None) -> dict[str, str]:
    cpuinfo = _read("/proc/cpuinfo")
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    mem = status_like(_read("/proc/meminfo"), "MemTotal")
    from importlib.metadata import version

    envoy_version = _cmd(envoy, "--version")
    match = re.search(r"/(\d+\.\d+\.\d+)/", envoy_version)
    wrk = _cmd("wrk", "--version")
    return {
        "CPU": model.group(1).strip() if model else platform.processor() or "unknown",
        "cores": str(os.cpu_count()),
        "RAM": f"{mem / 1024 / 1024:.1f} GiB" if mem else "unknown",
        "kernel": platform.release(),
        "OS": _os_name(),
        "Python": platform.python_version(),
        "Envoy": match.group(1) if match else envoy_version[:60],
        "Quotagate": version("quotagate"),
        "LiteLLM": litellm_version or "not run",
        "grpcio": version("grpcio"),
        "mitmproxy": version("mitmproxy"),
        "wrk": wrk.splitlines()[0][:40] if wrk != "n/a" else "not installed",
        "interpreter": sys.executable,
    }


def status_like(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()
