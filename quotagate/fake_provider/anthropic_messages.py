"""POST /v1/messages: a message object, or the Messages event sequence.

Stream: message_start, content_block_start, ping, content_block_delta..., content_block_stop,
message_delta (final usage, restating input and cache counts), message_stop. With reasoning tokens a
thinking block (thinking_delta..., signature_delta) comes first, as with extended thinking.
"""

from __future__ import annotations

from typing import Any

import orjson

from quotagate.fake_provider.errors import anthropic_error_payload
from quotagate.fake_provider.exchange import Exchange
from quotagate.fake_provider.reply import Plan
from quotagate.fake_provider.stream import Script
from quotagate.fake_provider.wire import ANTHROPIC_PING, anthropic_event, new_id

_SIGNATURE = "RmFrZVNpZ25hdHVyZUZvclRoaW5raW5nQmxvY2tzLg=="


def _cache_counts(plan: Plan) -> dict[str, int]:
    return {
        "input_tokens": plan.uncached_input_tokens,
        "cache_creation_input_tokens": plan.cache_write_tokens,
        "cache_read_input_tokens": plan.cached_tokens,
    }


def usage(plan: Plan, output_tokens: int) -> dict[str, Any]:
    """Anthropic usage: input_tokens exclude cache reads and writes; output includes thinking."""
    return {
        **_cache_counts(plan),
        "cache_creation": {"ephemeral_5m_input_tokens": plan.cache_write_tokens, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _stop_reason(plan: Plan) -> str:
    return "max_tokens" if plan.truncated else "end_turn"


def render_json(ex: Exchange) -> bytes:
    plan = ex.plan
    content: list[dict[str, Any]] = []
    if plan.thinking:
        content.append({"type": "thinking", "thinking": "".join(plan.thinking), "signature": _SIGNATURE})
    if plan.visible_tokens or not plan.thinking:
        content.append({"type": "text", "text": plan.text})
    return orjson.dumps(
        {
            "model": ex.model,
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "content": content,
            "stop_reason": _stop_reason(plan),
            "stop_sequence": None,
            "usage": usage(plan, plan.output_tokens),
        }
    )


def render_stream(ex: Exchange) -> Script:
    plan = ex.plan
    events: list[tuple[bytes, bool]] = []

    def emit(event: str, payload: dict[str, Any], delta: bool = False) -> None:
        events.append((anthropic_event(event.encode(), {"type": event, **payload}, len(events)), delta))

    message: dict[str, Any] = {
        "model": ex.model,
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage(plan, 1),
    }
    emit("message_start", {"message": message})
    index = 0
    if plan.thinking:
        emit(
            "content_block_start",
            {"index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        )
        events.append((ANTHROPIC_PING, False))
        for text in plan.thinking:
            emit("content_block_delta", {"index": index, "delta": {"type": "thinking_delta", "thinking": text}}, True)
        emit("content_block_delta", {"index": index, "delta": {"type": "signature_delta", "signature": _SIGNATURE}})
        emit("content_block_stop", {"index": index})
        index += 1
    if plan.visible_tokens or not plan.thinking:
        emit("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
        if index == 0:
            events.append((ANTHROPIC_PING, False))
        for text in plan.deltas:
            emit("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": text}}, True)
        emit("content_block_stop", {"index": index})
    final_usage = {**_cache_counts(plan), "output_tokens": plan.output_tokens}
    emit("message_delta", {"delta": {"stop_reason": _stop_reason(plan), "stop_sequence": None}, "usage": final_usage})
    emit("message_stop", {})

    def error_event(sent: int) -> bytes:
        b = ex.behaviour
        payload = anthropic_error_payload(529, ex.request_id, b.error_message, b.error_type)
        return anthropic_event(b"error", payload, sent)

    return Script(events, error_event)
