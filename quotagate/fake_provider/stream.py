"""Plays a scripted SSE stream with pacing, in-stream errors and abrupt cuts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from quotagate.fake_provider.behaviour import Behaviour
from quotagate.fake_provider.wire import SSE_TYPE

# uvicorn logs this when an app returns mid-body, which is exactly how we cut a stream on purpose.
_CUT_MESSAGE = "ASGI callable returned without completing response."


@dataclass(frozen=True, slots=True)
class Script:
    """A stream as (bytes, is_content_delta) events, and how to render an in-stream error."""

    events: Sequence[tuple[bytes, bool]]
    error_event: Callable[[int], bytes]  # gets the number of events already sent (sequence numbers)


class ScriptedStream(Response):
    """Sends ``script`` as SSE. Deltas are paced; structural events ride along with the next delta.

    ``cut_after`` N: after N content deltas, return without finishing the body, so the server closes the
    connection mid-chunked-body and no terminal event arrives. ``stream_error_after`` N: after N deltas,
    send the API's error event instead of the rest and finish the body normally.
    """

    media_type = SSE_TYPE

    def __init__(self, script: Script, behaviour: Behaviour, headers: Mapping[str, str]) -> None:
        self.status_code = 200
        self.background = None
        self.script = script
        self.behaviour = behaviour
        self.init_headers({**headers, "cache-control": "no-cache"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        behaviour = self.behaviour
        if behaviour.ttft_ms:
            await asyncio.sleep(behaviour.ttft_ms / 1000)
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        delay = behaviour.chunk_delay_ms / 1000
        cut_after, error_after = behaviour.cut_after, behaviour.stream_error_after
        pending: list[bytes] = []
        deltas = 0
        emitted = 0
        for data, is_delta in self.script.events:
            if is_delta:
                if deltas == cut_after:
                    await _body(send, pending, more=True)
                    return
                if deltas == error_after:
                    pending.append(self.script.error_event(emitted))
                    await _body(send, pending, more=False)
                    return
                if deltas and delay:
                    await asyncio.sleep(delay)
                pending.append(data)
                await _body(send, pending, more=True)
                deltas += 1
            else:
                pending.append(data)
            emitted += 1
        # Past the last delta: a cut or error set beyond it replaces the closing events.
        if cut_after >= 0:
            return
        if error_after >= 0:
            pending = [self.script.error_event(emitted - len(pending))]
        await _body(send, pending, more=False)


async def _body(send: Send, pending: list[bytes], *, more: bool) -> None:
    if pending or not more:
        await send({"type": "http.response.body", "body": b"".join(pending), "more_body": more})
        pending.clear()


class _HideDeliberateCuts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _CUT_MESSAGE


_CUT_FILTER = _HideDeliberateCuts()


def hide_cut_stream_log() -> None:
    """Keep uvicorn from logging an error for every stream we cut on purpose (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if _CUT_FILTER not in logger.filters:
        logger.addFilter(_CUT_FILTER)
