"""What one fake reply looks like: pacing, usage knobs and injected faults.

Every field is settable per server (``FakeConfig.defaults``, CLI ``--NAME``) and per request with a header
``x-fake-NAME`` (underscores become dashes: ``ttft_ms`` is ``x-fake-ttft-ms`` / ``--ttft-ms``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

HEADER_PREFIX = b"x-fake-"


@dataclass(frozen=True, slots=True)
class Behaviour:
    output_tokens: int = 16  # reply length in tokens before any max-tokens cap (reasoning not included)
    chunks: int = 0  # content deltas per stream; 0 = one per token
    ttft_ms: float = 0.0  # delay before the response starts (headers and first token)
    chunk_delay_ms: float = 0.0  # delay between consecutive content deltas
    latency_ms: float = 0.0  # delay before a non-streamed (JSON) response, errors included
    cached_tokens: int = 0  # prompt tokens reported as cache reads (capped at the prompt)
    cache_write_tokens: int = 0  # Anthropic cache_creation_input_tokens (capped at the rest of the prompt)
    reasoning_tokens: int = 0  # hidden reasoning / Anthropic thinking tokens, counted in output
    error_status: int = 0  # answer with this HTTP status and a provider-shaped error body
    error_type: str = ""  # override the error body's type (default: the provider's type for the status)
    error_message: str = ""  # override the error body's message
    retry_after: str = ""  # Retry-After header value on injected errors
    cut_after: int = -1  # streams: close the connection abruptly after N content deltas
    stream_error_after: int = -1  # streams: send an in-stream error event after N content deltas
    garbage: bool = False  # answer 200 with a body that is neither JSON nor SSE

    def with_overrides(self, overrides: dict[str, Any]) -> Behaviour:
        return dataclasses.replace(self, **overrides) if overrides else self


class BadFakeHeader(ValueError):
    """An ``x-fake-*`` header or option has a value of the wrong type or range."""


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _int_or_off(text: str) -> int:
    value = int(text)
    if value < -1:
        raise ValueError("must be >= 0 (or -1 for off)")
    return value


def _millis(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 600_000:
        raise ValueError("must be between 0 and 600000 ms")
    return value


def _status(text: str) -> int:
    value = int(text)
    if value != 0 and not 400 <= value <= 599:
        raise ValueError("must be an HTTP error status (400-599) or 0")
    return value


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


_PARSERS: dict[str, Callable[[str], object]] = {
    "output_tokens": _non_negative_int,
    "chunks": _non_negative_int,
    "ttft_ms": _millis,
    "chunk_delay_ms": _millis,
    "latency_ms": _millis,
    "cached_tokens": _non_negative_int,
    "cache_write_tokens": _non_negative_int,
    "reasoning_tokens": _non_negative_int,
    "error_status": _status,
    "error_type": str,
    "error_message": str,
    "retry_after": str,
    "cut_after": _int_or_off,
    "stream_error_after": _int_or_off,
    "garbage": _flag,
}
FIELD_NAMES: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(Behaviour))
assert set(FIELD_NAMES) == set(_PARSERS), "every Behaviour field needs a parser"

# b"x-fake-ttft-ms" -> "ttft_ms": one dict lookup per request header.
_BY_HEADER: dict[bytes, str] = {HEADER_PREFIX + name.replace("_", "-").encode(): name for name in FIELD_NAMES}


def header_name(field: str) -> str:
    return (HEADER_PREFIX + field.replace("_", "-").encode()).decode()


def parse_value(field: str, text: str) -> object:
    """Parse one knob's textual value; raises BadFakeHeader naming the header."""
    try:
        return _PARSERS[field](text)
    except ValueError as exc:
        raise BadFakeHeader(f"{header_name(field)}: {text!r} {exc}") from None


def from_headers(defaults: Behaviour, raw_headers: Iterable[tuple[bytes, bytes]]) -> Behaviour:
    """``defaults`` overridden by the request's ``x-fake-*`` headers (lower-case names, as ASGI gives them)."""
    overrides: dict[str, Any] = {}
    for name, value in raw_headers:
        if name.startswith(HEADER_PREFIX):
            field = _BY_HEADER.get(name)
            if field is None:
                raise BadFakeHeader(f"unknown header {name.decode('latin-1')}")
            overrides[field] = parse_value(field, value.decode("latin-1"))
    return defaults.with_overrides(overrides)
