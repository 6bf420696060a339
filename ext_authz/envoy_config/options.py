"""What an Envoy configuration is rendered for, besides the snapshot: addresses, limits, timeouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

# Where common distributions keep the system CA bundle (Debian/Ubuntu/Alpine, RHEL/Fedora, macOS/BSD).
SYSTEM_CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


def system_ca_file() -> str:
    return next((f for f in SYSTEM_CA_FILES if Path(f).is_file()), SYSTEM_CA_FILES[0])


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"invalid address {text!r}: use host:port")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class RenderOptions:
    listen: tuple[str, int] = ("0.0.0.0", 10000)
    # Quotagate gRPC workers: "host:port" or "unix:/path" (every one is an endpoint of one HTTP/2 cluster).
    grpc_endpoints: tuple[str, ...] = ("127.0.0.1:50051",)
    # `quotagate serve --check` addresses ("host:port" or "unix:/path"): Check goes over HTTP (http_contract.py),
    # which costs a fraction of the gRPC round trip. Empty: Check goes over gRPC to grpc_endpoints.
    check_endpoints: tuple[str, ...] = ()
    # Quotagate's HTTP side (models list, admin API, dashboard); None: those paths are not routed.
    http_side: tuple[str, int] | None = None
    admin_port: int = 9901
    # Largest request body (Settings.max_request_bytes): Check sees the whole body up to this size.
    max_request_bytes: int = 8 * 1024 * 1024
    ca_file: str = field(default_factory=system_ca_file)
    # Check normally answers in about a millisecond. It can take longer on a body of several MiB, while
    # the counter backend fails over (the core bounds a Redis call at 250 ms, then answers its own 503)
    # or while a worker reloads its configuration; Envoy's 200 ms default would turn those moments into
    # bare 503s. Past this bound the request is refused (status_on_error), never let through.
    check_timeout: timedelta = timedelta(seconds=3)
    # The rewrite filter parses and re-serializes a buffered body of up to max_request_bytes.
    rewrite_timeout: timedelta = timedelta(seconds=3)
    # A whole LLM response: long generations stream for minutes (the OpenAI SDK's own default is 600 s).
    upstream_timeout: timedelta = timedelta(seconds=600)
    access_log: bool = True
