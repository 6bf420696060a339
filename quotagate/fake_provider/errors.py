"""Provider-shaped error bodies, as the recordings in shared/fixtures/providers show them."""

from __future__ import annotations

from typing import Any

import orjson

from quotagate.apis import Provider

# status -> (type, code, message) as OpenAI sends them.
_OPENAI: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (injected by the fake provider)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to sample from this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    409: ("invalid_request_error", None, "Conflict."),
    413: ("invalid_request_error", None, "Request too large."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}
# status -> (type, message) as Anthropic sends them.
_ANTHROPIC: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request (injected by the fake provider)."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def openai_error(status: int, message: str = "", type_: str = "", param: str | None = None) -> bytes:
    known_type, code, known_message = _OPENAI.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Error {status}.")
    )
    error: dict[str, Any] = {
        "message": message or known_message,
        "type": type_ or known_type,
        "param": param,
        "code": code,
    }
    return orjson.dumps({"error": error})


def anthropic_error_payload(status: int, request_id: str, message: str = "", type_: str = "") -> dict[str, Any]:
    known_type, known_message = _ANTHROPIC.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", f"Error {status}.")
    )
    return {
        "type": "error",
        "error": {"type": type_ or known_type, "message": message or known_message},
        "request_id": request_id,
    }


def error_body(
    provider: Provider, status: int, request_id: str, message: str = "", type_: str = "", param: str | None = None
) -> bytes:
    if provider is Provider.ANTHROPIC:
        return orjson.dumps(anthropic_error_payload(status, request_id, message, type_))
    return openai_error(status, message, type_, param)
