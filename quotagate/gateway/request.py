"""Reading what a decision needs from a request body: model, stream flag, max output. Nothing more."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from quotagate.apis import Api
from quotagate.tokens import max_output_tokens

# Sanity bound on output caps: larger than any model's, small enough that worst-case costs stay exact.
MAX_OUTPUT_LIMIT = 10_000_000
_OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# A model name is stored with the request's usage event (a 200-character column) and echoed in refusals: a longer
# one, or one with control characters (PostgreSQL text cannot hold NUL), would be an event no database takes.
MAX_MODEL_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1


class BadRequest(Exception):
    """The body is unusable: 400 with this message (413 when `status` says so)."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    api: Api
    body: dict[str, Any]
    model: str
    stream: bool
    max_output: int | None  # the client's cap, if any
    include_usage: bool  # OpenAI stream_options.include_usage already set by the client


def parse_request(api: Api, raw: bytes) -> ParsedRequest:
    if not raw:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise BadRequest("missing required parameter: 'model'", code="missing_model")
    if not isinstance(model, str) or not (model_name := model.strip()):
        raise BadRequest("'model' must be a non-empty string", code="invalid_model")
    if len(model_name) > MAX_MODEL_CHARS or _CONTROL.search(model_name):
        raise BadRequest(
            f"'model' must be at most {MAX_MODEL_CHARS} characters, without control characters", code="invalid_model"
        )
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean")
    if api is Api.OPENAI_EMBEDDINGS and stream:
        raise BadRequest("embeddings do not stream")
    for name in _OUTPUT_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadRequest(f"'{name}' must be an integer")
        if value < 1 or value > MAX_OUTPUT_LIMIT:
            raise BadRequest(f"'{name}' must be between 1 and {MAX_OUTPUT_LIMIT}")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object")
    include_usage = bool(options and options.get("include_usage") is True)
    return ParsedRequest(api, body, model_name, stream, max_output_tokens(api, body), include_usage)
