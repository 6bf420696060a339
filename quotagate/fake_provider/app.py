"""The fake provider's ASGI app: OpenAI- and Anthropic-compatible endpoints plus /_fake/ controls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quotagate.apis import API_BY_PATH, Api, Provider
from quotagate.fake_provider import (
    anthropic_messages,
    openai_chat,
    openai_completions,
    openai_embeddings,
    openai_responses,
)
from quotagate.fake_provider.behaviour import BadFakeHeader, Behaviour, from_headers
from quotagate.fake_provider.config import FakeConfig
from quotagate.fake_provider.connections import ConnectionLog
from quotagate.fake_provider.errors import error_body, openai_error
from quotagate.fake_provider.exchange import Exchange
from quotagate.fake_provider.recorder import Recorder
from quotagate.fake_provider.reply import make_plan
from quotagate.fake_provider.stream import Script, ScriptedStream
from quotagate.fake_provider.wire import GARBAGE, JSON_TYPE, SSE_TYPE, new_id

_JSON_RENDERERS: dict[Api, Callable[[Exchange], bytes]] = {
    Api.OPENAI_CHAT: openai_chat.render_json,
    Api.OPENAI_COMPLETIONS: openai_completions.render_json,
    Api.OPENAI_EMBEDDINGS: openai_embeddings.render_json,
    Api.OPENAI_RESPONSES: openai_responses.render_json,
    Api.ANTHROPIC_MESSAGES: anthropic_messages.render_json,
}
_STREAM_RENDERERS: dict[Api, Callable[[Exchange], Script]] = {
    Api.OPENAI_CHAT: openai_chat.render_stream,
    Api.OPENAI_COMPLETIONS: openai_completions.render_stream,
    Api.OPENAI_RESPONSES: openai_responses.render_stream,
    Api.ANTHROPIC_MESSAGES: anthropic_messages.render_stream,
}
_BAD_JSON = {
    Provider.OPENAI: (
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
        "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
    ),
    Provider.ANTHROPIC: "There was an issue with the request body: it is not valid JSON.",
}


class _Invalid(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _require(body: Mapping[str, Any], field: str, kind: type | tuple[type, ...], provider: Provider) -> None:
    value = body.get(field)
    if value is None:
        if provider is Provider.ANTHROPIC:
            raise _Invalid(f"{field}: Field required", field)
        raise _Invalid(f"Missing required parameter: '{field}'.", field)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _Invalid(f"Invalid type for '{field}'.", field)


def _validate(api: Api, body: Mapping[str, Any]) -> None:
    """The few checks that keep rendering well-defined; real providers check far more."""
    provider = api.provider
    _require(body, "model", str, provider)
    if api is Api.OPENAI_CHAT:
        _require(body, "messages", list, provider)
        if not body["messages"]:
            raise _Invalid("[] is too short - 'messages'", "messages")
    elif api is Api.OPENAI_COMPLETIONS:
        _require(body, "prompt", (str, list), provider)
    elif api is Api.OPENAI_EMBEDDINGS:
        _require(body, "input", (str, list), provider)
        size = openai_embeddings.dimensions(body["model"], body)
        if not 1 <= size <= openai_embeddings.MAX_DIMENSIONS:
            raise _Invalid(f"{size} is not between 1 and {openai_embeddings.MAX_DIMENSIONS} - 'dimensions'")
        if not body["input"]:
            raise _Invalid("'$.input' is invalid: it must not be empty.", "input")
    elif api is Api.OPENAI_RESPONSES:
        _require(body, "input", (str, list), provider)
    else:
        _require(body, "max_tokens", int, provider)
        _require(body, "messages", list, provider)
        if not body["messages"]:
            raise _Invalid("messages: at least one message is required")
    if body.get("stream") is True and api is Api.OPENAI_EMBEDDINGS:
        raise _Invalid("Unrecognized request argument supplied: stream", "stream")


def _credential(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].decode("latin-1").strip()
        if name in (b"x-api-key", b"api-key"):
            return value.decode("latin-1").strip()
    return None


class _ApiHandler:
    """Answers one API path. Order: record, knobs, latency, auth, injected error, parse, validate, render."""

    def __init__(self, api: Api, config: FakeConfig, recorder: Recorder) -> None:
        self.api = api
        self.provider = api.provider
        self.config = config
        self.recorder = recorder

    def _headers(self, request_id: str) -> dict[str, str]:
        if self.provider is Provider.ANTHROPIC:
            return {"request-id": request_id, "x-request-id": request_id}
        return {"x-request-id": request_id, "openai-version": "2020-10-01"}

    def _error(
        self, status: int, request_id: str, message: str = "", type_: str = "", param: str | None = None
    ) -> Response:
        body = error_body(self.provider, status, request_id, message, type_, param)
        return Response(body, status, self._headers(request_id), JSON_TYPE)

    async def __call__(self, request: Request) -> Response:
        scope = request.scope
        raw = await request.body()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.recorder.add(scope["method"], scope["path"], scope["query_string"].decode("latin-1"), headers, raw)
        request_id = new_id("req_")
        try:
            behaviour = from_headers(self.config.defaults, headers)
        except BadFakeHeader as exc:
            return self._error(400, request_id, str(exc))
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        stream = isinstance(body, dict) and body.get("stream") is True
        # A streamed answer waits ttft_ms inside ScriptedStream; anything answered as JSON waits here.
        wait_ms = behaviour.ttft_ms if stream else behaviour.latency_ms
        if wait_ms:
            await asyncio.sleep(wait_ms / 1000)
        if self.config.api_keys and _credential(headers) not in self.config.api_keys:
            return self._error(401, request_id)
        if behaviour.error_status:
            response = self._error(behaviour.error_status, request_id, behaviour.error_message, behaviour.error_type)
            if behaviour.retry_after:
                response.headers["retry-after"] = behaviour.retry_after
            return response
        if not isinstance(body, dict):
            return self._error(400, request_id, _BAD_JSON[self.provider])
        try:
            _validate(self.api, body)
        except _Invalid as exc:
            return self._error(400, request_id, exc.message, param=exc.param)
        if behaviour.garbage:
            return Response(GARBAGE, 200, self._headers(request_id), SSE_TYPE if stream else JSON_TYPE)
        return self._render(raw, body, behaviour, stream, request_id)

    def _render(
        self, raw: bytes, body: dict[str, Any], behaviour: Behaviour, stream: bool, request_id: str
    ) -> Response:
        exchange = Exchange(
            api=self.api,
            body=body,
            model=body["model"],
            plan=make_plan(self.api, raw, body, behaviour),
            behaviour=behaviour,
            request_id=request_id,
            created=int(time.time()),
        )
        if stream:
            script = _STREAM_RENDERERS[self.api](exchange)
            return ScriptedStream(script, behaviour, self._headers(request_id))
        return Response(_JSON_RENDERERS[self.api](exchange), 200, self._headers(request_id), JSON_TYPE)


def _models(config: FakeConfig) -> Callable[[Request], Response]:
    created = 1_700_000_000

    def list_models(request: Request) -> Response:
        if "anthropic-version" in request.headers:
            data: list[dict[str, Any]] = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in config.models
            ]
            first, last = (config.models[0], config.models[-1]) if config.models else (None, None)
            body: dict[str, Any] = {"data": data, "has_more": False, "first_id": first, "last_id": last}
        else:
            data = [{"id": m, "object": "model", "created": created, "owned_by": "fake"} for m in config.models]
            body = {"object": "list", "data": data}
        return Response(orjson.dumps(body), 200, {"x-request-id": new_id("req_")}, JSON_TYPE)

    return list_models


def _requests_endpoint(recorder: Recorder) -> Callable[[Request], Response]:
    def requests(request: Request) -> Response:
        if request.method == "DELETE":
            recorder.clear()
            return Response(status_code=204)
        return Response(orjson.dumps(recorder.snapshot()), 200, media_type=JSON_TYPE)

    return requests


def _connections_endpoint(log: ConnectionLog) -> Callable[[Request], Response]:
    def connections(request: Request) -> Response:
        if request.method == "DELETE":
            log.clear()
            return Response(status_code=204)
        return Response(orjson.dumps(log.snapshot()), 200, media_type=JSON_TYPE)

    return connections


def _health(_request: Request) -> Response:
    return Response(b'{"status":"ok"}', 200, media_type=JSON_TYPE)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    message = f"Invalid URL ({request.method} {request.url.path})"
    return Response(openai_error(status, message, "invalid_request_error"), status, media_type=JSON_TYPE)


def build_app(config: FakeConfig | None = None) -> Starlette:
    """The fake provider as a Starlette app; ``app.state.recorder`` holds the requests it received and
    ``app.state.connections`` the connections (filled by the server ``make_server`` builds for it)."""
    config = config or FakeConfig()
    recorder = Recorder(config.record_limit)
    connections = ConnectionLog()
    # A bound method, so Starlette wraps it as a request -> response endpoint rather than a raw ASGI app.
    routes = [
        Route(path, _ApiHandler(api, config, recorder).__call__, methods=["POST"]) for path, api in API_BY_PATH.items()
    ]
    routes += [
        Route("/v1/models", _models(config), methods=["GET"]),
        Route("/_fake/requests", _requests_endpoint(recorder), methods=["GET", "DELETE"]),
        Route("/_fake/connections", _connections_endpoint(connections), methods=["GET", "DELETE"]),
        Route("/_fake/health", _health, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found})
    app.state.recorder = recorder
    app.state.connections = connections
    app.state.config = config
    return app
