"""Request-body rewrites the response side depends on, applied by ext_proc or the addon."""

from __future__ import annotations

import orjson

from quotagate.apis import Api
from quotagate.gateway.ticket import Ticket

# OpenAI streams report usage only when asked; these APIs take stream_options.include_usage.
INCLUDE_USAGE_APIS = frozenset({Api.OPENAI_CHAT, Api.OPENAI_COMPLETIONS})


def rewrite_body(ticket: Ticket, raw: bytes) -> bytes | None:
    """The body to send upstream, or None to send it unchanged. Never raises on a body Check accepted."""
    if not ticket.needs_body_rewrite:
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    if ticket.rewrite_model:
        body["model"] = ticket.model
    if ticket.inject_include_usage:
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return orjson.dumps(body)
