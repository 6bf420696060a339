"""Wire details shared by the renderers: ids, SSE framing, and the padding real providers add."""

from __future__ import annotations

import itertools
import os
from typing import Any

import orjson

_PROCESS = os.urandom(4).hex()  # ids stay unique across fake-provider processes
_counter = itertools.count(1)


def new_id(prefix: str) -> str:
    """A unique id like the provider's (``chatcmpl-``, ``msg_``, ``req_``...); a counter is cheaper than random."""
    return f"{prefix}fake{_PROCESS}{next(_counter):012x}"


# OpenAI pads stream events with an ``obfuscation`` string of varying length (a side-channel defence);
# we imitate its shape deterministically.
_OBFUSCATION_ALPHABET = "Qk5ENocFqkZOrG2ubBYwM46wA1R0uj9DWXHF2DtMCaA"


def obfuscation(index: int) -> str:
    return _OBFUSCATION_ALPHABET[: (index * 5) % 16]


# Anthropic pads ``data:`` JSON with spaces before the closing brace; parsers must cope.
_PADS = tuple(b" " * n for n in (0, 7, 3, 12, 0, 5, 9, 1, 15, 4))


def anthropic_event(event: bytes, payload: dict[str, Any], index: int) -> bytes:
    data = orjson.dumps(payload)
    pad = _PADS[index % len(_PADS)]
    if pad:
        data = data[:-1] + pad + b"}"
    return b"event: " + event + b"\ndata: " + data + b"\n\n"


def named_event(event: str, payload: dict[str, Any]) -> bytes:
    """An ``event:``/``data:`` pair (OpenAI Responses API)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def data_event(payload: dict[str, Any]) -> bytes:
    """A bare ``data:`` line (OpenAI chat and completions streams)."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"
ANTHROPIC_PING = b'event: ping\ndata: {"type": "ping"}\n\n'

JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"
# Neither JSON nor SSE events with JSON in them: what a broken proxy or provider might send.
GARBAGE = b'<html><body>502 Bad Gateway</body></html>\n{"choices": [garbage\n\ndata: {not json\n\n'
