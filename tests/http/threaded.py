"""A gateway runtime with its HTTP API (and optionally the ext_authz gRPC server) on an event loop in a
thread, for callers that block: schemathesis, the synchronous openai SDK through Envoy."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from quotagate.http.app import build_http_app, serve_http
from quotagate.runtime import GatewayRuntime, open_runtime
from quotagate.settings import Settings
from tests.http.conftest import free_port


@dataclass
class Served:
    settings: Settings
    grpc: bool
    url: str = ""
    grpc_address: str = ""
    runtime: GatewayRuntime | None = None
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _ready: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _http: asyncio.Task[None] | None = None

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run a coroutine on the server's loop (where the runtime lives) and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def stop_http(self) -> None:
        """Stop answering HTTP (the runtime keeps running), as when the gateway's process goes away."""
        self.call(self._stop_http())

    def start_http(self) -> None:
        """Serve the API again on the same address."""
        self.call(self._start_http())

    async def _start_http(self) -> None:
        assert self.runtime is not None and self._http is None
        port = int(self.url.rsplit(":", 1)[1])
        self._http = asyncio.create_task(serve_http(build_http_app(self.runtime), "127.0.0.1", port))
        async with httpx.AsyncClient() as probe:
            deadline = time.monotonic() + 15
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get(self.url + "/healthz")).status_code == 200:
                        return
                assert not self._http.done() and time.monotonic() < deadline, "the API did not start"
                await asyncio.sleep(0.02)

    async def _stop_http(self) -> None:
        if self._http is not None:
            self._http.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._http
            self._http = None

    async def main(self) -> None:
        try:
            self.runtime = open_runtime(self.settings)
            await self.runtime.start()
            self.url = f"http://127.0.0.1:{free_port()}"
            await self._start_http()
        except BaseException as exc:
            self._ready.set_exception(exc)
            raise
        try:
            if self.grpc:
                from ext_authz.server import serve

                def bound(address: str) -> None:
                    self.grpc_address = address
                    self._ready.set_result(None)

                await serve(self.runtime, "127.0.0.1:0", stop=self._stop, grace_s=2, on_ready=bound)
            else:
                self._ready.set_result(None)
                await self._stop.wait()
        finally:
            await self._stop_http()
            await self.runtime.stop()


@contextlib.contextmanager
def serving_in_thread(settings: Settings, *, grpc: bool = False) -> Iterator[Served]:
    served = Served(settings, grpc)
    thread = threading.Thread(target=served._loop.run_until_complete, args=(served.main(),), daemon=True)
    thread.start()
    try:
        served._ready.result(timeout=30)
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(served.url + "/healthz").status_code == 200:
                    break
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.02)
        yield served
    finally:
        served._loop.call_soon_threadsafe(served._stop.set)
        thread.join(timeout=30)
        if not thread.is_alive():
            served._loop.close()
