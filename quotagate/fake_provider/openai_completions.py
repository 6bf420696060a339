"""POST /v1/completions (legacy): a text_completion object, or text_completion chunks."""

from __future__ import annotations

from typing import Any

import orjson

from quotagate.fake_provider.errors import openai_error
from quotagate.fake_provider.exchange import Exchange
from quotagate.fake_provider.reply import Plan
from quotagate.fake_provider.stream import Script
from quotagate.fake_provider.wire import DONE, data_event, new_id


def usage(plan: Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.prompt_tokens + plan.output_tokens,
    }


def _finish_reason(plan: Plan) -> str:
    return "length" if plan.truncated else "stop"


def render_json(ex: Exchange) -> bytes:
    return orjson.dumps(
        {
            "id": new_id("cmpl-"),
            "object": "text_completion",
            "created": ex.created,
            "model": ex.model,
            "choices": [{"text": ex.plan.text, "index": 0, "logprobs": None, "finish_reason": _finish_reason(ex.plan)}],
            "usage": usage(ex.plan),
        }
    )


def render_stream(ex: Exchange) -> Script:
    include_usage = ex.stream_option("include_usage", False)
    completion_id = new_id("cmpl-")

    def chunk(text: str, finish: str | None) -> bytes:
        # Key order as recorded: the legacy API puts "model" after "choices".
        payload: dict[str, Any] = {
            "id": completion_id,
            "object": "text_completion",
            "created": ex.created,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "model": ex.model,
        }
        if include_usage:
            payload["usage"] = None
        return data_event(payload)

    deltas = ex.plan.deltas
    finish = _finish_reason(ex.plan)
    # The legacy API sets finish_reason on the last text chunk rather than sending an empty one.
    events = [(chunk(text, finish if i == len(deltas) - 1 else None), True) for i, text in enumerate(deltas)]
    if not deltas:
        events.append((chunk("", finish), False))
    if include_usage:
        final = {
            "id": completion_id,
            "object": "text_completion",
            "created": ex.created,
            "model": ex.model,
            "usage": usage(ex.plan),
            "choices": [],
        }
        events.append((data_event(final), False))
    events.append((DONE, False))

    def error_event(_sent: int) -> bytes:
        b = ex.behaviour
        return b"data: " + openai_error(500, b.error_message, b.error_type) + b"\n\n"

    return Script(events, error_event)
