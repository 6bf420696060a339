"""POST /v1/chat/completions: a chat.completion object, or chat.completion.chunk events."""

from __future__ import annotations

from typing import Any

import orjson

from quotagate.fake_provider.errors import openai_error
from quotagate.fake_provider.exchange import Exchange
from quotagate.fake_provider.reply import Plan
from quotagate.fake_provider.stream import Script
from quotagate.fake_provider.wire import DONE, data_event, new_id, obfuscation

_FINGERPRINT = "fp_fake0001"


def usage(plan: Plan) -> dict[str, Any]:
    """OpenAI chat usage: prompt_tokens include cached tokens, completion_tokens include reasoning."""
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.prompt_tokens + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": plan.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish_reason(plan: Plan) -> str:
    return "length" if plan.truncated else "stop"


def render_json(ex: Exchange) -> bytes:
    return orjson.dumps(
        {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": ex.created,
            "model": ex.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ex.plan.text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": _finish_reason(ex.plan),
                }
            ],
            "usage": usage(ex.plan),
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }
    )


def render_stream(ex: Exchange) -> Script:
    include_usage = ex.stream_option("include_usage", False)
    pad = ex.stream_option("include_obfuscation", True)
    head: dict[str, Any] = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": ex.created,
        "model": ex.model,
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }
    count = 0

    def chunk(choices: list[dict[str, Any]], usage_value: dict[str, Any] | None = None) -> bytes:
        nonlocal count
        payload = {**head, "choices": choices}
        if include_usage:  # only then does OpenAI send "usage": null on every chunk
            payload["usage"] = usage_value
        if pad:
            payload["obfuscation"] = obfuscation(count)
        count += 1
        return data_event(payload)

    def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

    events = [(chunk(choice({"role": "assistant", "content": "", "refusal": None})), False)]
    events.extend((chunk(choice({"content": text})), True) for text in ex.plan.deltas)
    events.append((chunk(choice({}, _finish_reason(ex.plan))), False))
    if include_usage:
        events.append((chunk([], usage(ex.plan)), False))
    events.append((DONE, False))

    def error_event(_sent: int) -> bytes:
        b = ex.behaviour
        return b"data: " + openai_error(500, b.error_message, b.error_type) + b"\n\n"

    return Script(events, error_event)
