"""The ExternalProcessor gRPC service: owns each Process stream; `processor.py` holds the logic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from ext_authz.names import PROBE_HEADER
from ext_authz.processor import OpenMeter, StreamMeter, StreamProcessor
from quotagate.metrics import METERING_LOST

log = logging.getLogger(__name__)
ENDED_EARLY = "the ext_proc stream ended before the response did"


def _is_probe(context: Any) -> bool:
    return any(key == PROBE_HEADER for key, _ in context.invocation_metadata() or ())


class ExternalProcessorService(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, open_meter: OpenMeter) -> None:
        self._open_meter = open_meter
        self.lost = 0  # metering streams Envoy reset before one message was read
        self._finishing: set[asyncio.Task[object]] = set()

    async def Process(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[pb.ProcessingResponse]:
        if _is_probe(context):  # metering_probe.py measures how long it waited to get here
            return
        processor = StreamProcessor(self._open_meter)
        seen = False
        try:
            async for request in requests:
                seen = True
                response = processor.handle(request)
                if response is not None:
                    yield response
                if processor.response_ended and processor.meter is not None:
                    await processor.meter.finish()
                if processor.done:
                    # Closing at once frees the stream: in observability mode Envoy would otherwise hold
                    # it open for deferred_close_timeout (5 s) after every response.
                    return
        finally:
            # Envoy opens a metering stream with its first message: none read means Envoy reset the stream while it
            # waited to be accepted here (this process is past its capacity). Envoy does not resend: the response is
            # charged only as the sweep's estimate when its reservation expires.
            if not seen:
                self._metering_lost()
            # The stream ended (or was reset) first: client gone, upstream reset, Envoy or this server
            # stopping. The meter charges for what passed.
            if not processor.response_ended:
                self._finish_later(processor.meter, ENDED_EARLY)

    def _metering_lost(self) -> None:
        self.lost += 1
        METERING_LOST.inc()
        if self.lost == 1 or self.lost % 1000 == 0:
            log.warning(
                "%d response(s) went unmetered: Envoy reset their metering streams before this process read them "
                "(past capacity: add workers, or keep Check over gRPC, which cannot admit more than it meters)",
                self.lost,
            )

    def _finish_later(self, meter: StreamMeter | None, error: str) -> None:
        """Finish in a task of its own: the stream's task may be being cancelled."""
        if meter is None:
            return
        task = asyncio.get_running_loop().create_task(meter.finish(error=error))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def drain(self) -> None:
        """Wait for meters still finishing (shutdown, after the server stopped taking streams)."""
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
