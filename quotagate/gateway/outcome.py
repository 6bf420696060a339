"""What the core tells a front door to do with a request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from quotagate.gateway.ticket import Ticket


@dataclass(frozen=True, slots=True)
class CheckInput:
    """A request as a front door sees it. Header names are lower case."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    client_ip: str | None = None
    front_door: str = "envoy"
    body_truncated: bool = False  # the front door could not buffer the whole body


@dataclass(frozen=True, slots=True)
class Allow:
    ticket: Ticket
    set_headers: tuple[tuple[str, str], ...]  # provider credential, x-request-id, anthropic-version, routing
    remove_headers: tuple[str, ...]  # every gateway credential header
    response_headers: tuple[tuple[str, str], ...] = ()  # x-ratelimit-* for the client


@dataclass(frozen=True, slots=True)
class Deny:
    status: int
    body: bytes  # the provider's own error shape, so SDKs raise their usual exceptions
    headers: tuple[tuple[str, str], ...]
    reason: str  # reason code, e.g. invalid_credential, model_not_allowed, rate_limited_rpm
    request_id: str = ""
    detail: Mapping[str, str] = field(default_factory=dict)


Outcome = Allow | Deny
