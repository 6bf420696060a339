"""JSON bodies the way people send them: ``curl -d '{...}'`` without a content type.

curl's ``-d`` sends ``Content-Type: application/x-www-form-urlencoded`` unless told otherwise (seed 004's
PATCH does exactly that), and FastAPI parses a body as JSON only under a JSON content type. On endpoints
that take a JSON body, a body that is a JSON object is read as JSON when the content type is missing or
form-encoded; anything else (real form fields, text, multipart) is refused with a clear 415 before the
endpoint runs, so it changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import Message

from quotagate.http.errors import ApiError

FORM = "application/x-www-form-urlencoded"
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _is_json(media: str) -> bool:
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def _json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:  # not JSON, or not UTF-8 (UnicodeDecodeError is a ValueError)
        return False


def _as_json(request: Request, body: bytes) -> Request:
    """The same request, declared as JSON, its already-read body replayed to the endpoint."""
    headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
    headers.append((b"content-type", b"application/json"))
    replayed = False

    async def receive() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()

    return Request({**request.scope, "headers": headers}, receive)


def _refusal(media: str) -> ApiError:
    if media in ("", FORM):
        message = "The body must be a JSON object (send it as 'Content-Type: application/json'); form fields are not accepted."
    else:
        message = f"The body must be a JSON object sent as 'Content-Type: application/json', not '{media}'."
    return ApiError(415, "unsupported_media_type", message)


class JsonBodyRoute(APIRoute):
    """An API route that reads a JSON object body sent without (or with curl's default) content type."""

    def get_route_handler(self) -> Handler:
        handler: Handler = super().get_route_handler()
        if self.body_field is None:  # reads its body itself (the manifest endpoints take YAML as well)
            return handler

        async def route(request: Request) -> Response:
            media = _media_type(request)
            if not _is_json(media):
                body = await request.body()
                if body.strip():  # an empty body is the endpoint's own business (optional bodies)
                    if media not in ("", FORM) or not _json_object(body):
                        raise _refusal(media)
                    request = _as_json(request, body)
            return await handler(request)

        return route
