"""One line describing a provider error object, whatever its shape."""

from __future__ import annotations

_MESSAGE_LIMIT = 300


def describe_error(obj: object) -> str:
    """``"type (code): message"`` from OpenAI ``{"error": {...}}``, Anthropic ``{"type": "error",
    "error": {...}}``, a Responses ``error`` event (fields at the top) or ``response.error``."""
    if not isinstance(obj, dict):
        return "error"
    inner = obj.get("error")
    body = inner if isinstance(inner, dict) else obj
    kind = body.get("type")
    code = body.get("code")
    message = body.get("message")
    label = kind if isinstance(kind, str) and kind and kind != "error" else ""
    if isinstance(code, str) and code and code != label:
        label = f"{label} ({code})" if label else code
    label = label or "error"
    if isinstance(message, str) and message:
        return f"{label}: {message[:_MESSAGE_LIMIT]}"
    return label
