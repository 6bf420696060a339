"""Denials in the provider's own error shape, so the official SDKs raise their usual exception types."""

from __future__ import annotations

import orjson

from quotagate.apis import Provider, api_for_path
from quotagate.gateway.outcome import Deny

# status -> (OpenAI error type, Anthropic error type)
_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("invalid_request_error", "authentication_error"),
    403: ("permission_denied", "permission_error"),
    404: ("invalid_request_error", "not_found_error"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_exceeded", "rate_limit_error"),
    503: ("service_unavailable", "overloaded_error"),
}


def deny(
    provider: Provider | None,
    status: int,
    reason: str,
    message: str,
    *,
    request_id: str,
    error_type: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Deny:
    """A refusal: `reason` is Quotagate's code (OpenAI `code`), `error_type` overrides the default type."""
    openai_type, anthropic_type = _TYPES.get(status, ("api_error", "api_error"))
    if provider is Provider.ANTHROPIC:
        body = {
            "type": "error",
            "error": {"type": error_type or anthropic_type, "message": message},
            "request_id": request_id,
        }
    else:
        body = {"error": {"message": message, "type": error_type or openai_type, "param": None, "code": reason}}
    all_headers = (
        ("content-type", "application/json"),
        ("x-request-id", request_id),
        ("x-quotagate-deny-reason", reason),
        *headers,
    )
    return Deny(status=status, body=orjson.dumps(body), headers=all_headers, reason=reason, request_id=request_id)


def check_failed(path: str, request_id: str) -> Deny:
    """The refusal when Check itself failed: authorization fails closed, in the provider's error shape."""
    api = api_for_path(path)
    return deny(
        api.provider if api else None,
        503,
        "gateway_error",
        "The gateway could not check this request; try again shortly.",
        request_id=request_id,
    )
