"""POST /v1/responses: a response object, or response.* events with sequence numbers.

Usage appears only in the final ``response.completed`` (or ``response.incomplete`` when the output cap
was hit), as in the recordings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from quotagate.fake_provider.exchange import Exchange
from quotagate.fake_provider.reply import Plan
from quotagate.fake_provider.stream import Script
from quotagate.fake_provider.wire import named_event, new_id, obfuscation


def usage(plan: Plan) -> dict[str, Any]:
    """Responses usage: input_tokens include cached tokens, output_tokens include reasoning."""
    return {
        "input_tokens": plan.prompt_tokens,
        "input_tokens_details": {"cached_tokens": plan.cached_tokens},
        "output_tokens": plan.output_tokens,
        "output_tokens_details": {"reasoning_tokens": plan.reasoning_tokens},
        "total_tokens": plan.prompt_tokens + plan.output_tokens,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message(item_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "content": content, "role": "assistant"}


def _response(
    ex: Exchange,
    response_id: str,
    status: str,
    output: list[dict[str, Any]],
    usage_value: dict[str, Any] | None,
    streamed: bool = True,
) -> dict[str, Any]:
    body = ex.body
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, Mapping) else None
    done = status != "in_progress"
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": ex.created,
        "status": status,
        "background": False,
        "completed_at": ex.created if done else None,
        "error": None,
        "frequency_penalty": 0.0,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": ex.model,
        "moderation": None,
        "output": output,
        "parallel_tool_calls": True,
        "presence_penalty": 0.0,
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": None,
        "prompt_cache_retention": None,
        "reasoning": {"effort": effort, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": body.get("tools") or [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage_value,
        "user": None,
        "metadata": body.get("metadata") or {},
    }
    if not streamed:  # recorded JSON bodies carry "billing" right after "background"; streamed ones do not
        response = {**dict(list(response.items())[:5]), "billing": {"payer": "developer"}, **response}
    return response


def _final_status(plan: Plan) -> str:
    return "incomplete" if plan.truncated else "completed"


def _output(plan: Plan, reasoning_id: str, message_id: str) -> list[dict[str, Any]]:
    output: list[dict[str, Any]] = []
    if plan.reasoning_tokens:
        output.append({"id": reasoning_id, "type": "reasoning", "summary": []})
    if plan.visible_tokens or not plan.reasoning_tokens:
        output.append(_message(message_id, _final_status(plan), [_text_part(plan.text)]))
    return output


def render_json(ex: Exchange) -> bytes:
    plan = ex.plan
    output = _output(plan, new_id("rs_"), new_id("msg_"))
    return orjson.dumps(_response(ex, new_id("resp_"), _final_status(plan), output, usage(plan), streamed=False))


def render_stream(ex: Exchange) -> Script:
    plan = ex.plan
    response_id, reasoning_id, message_id = new_id("resp_"), new_id("rs_"), new_id("msg_")
    events: list[tuple[bytes, bool]] = []

    def emit(event: str, payload: dict[str, Any], delta: bool = False) -> None:
        events.append((named_event(event, {"type": event, **payload}), delta))

    def seq() -> int:
        return len(events)

    emit("response.created", {"response": _response(ex, response_id, "in_progress", [], None), "sequence_number": 0})
    emit(
        "response.in_progress", {"response": _response(ex, response_id, "in_progress", [], None), "sequence_number": 1}
    )
    index = 0
    if plan.reasoning_tokens:
        item = {"id": reasoning_id, "type": "reasoning", "summary": []}
        emit("response.output_item.added", {"sequence_number": seq(), "output_index": index, "item": item})
        emit("response.output_item.done", {"sequence_number": seq(), "output_index": index, "item": item})
        index += 1
    if plan.visible_tokens or not plan.reasoning_tokens:
        ids = {"item_id": message_id, "output_index": index}
        emit(
            "response.output_item.added",
            {"item": _message(message_id, "in_progress", []), "output_index": index, "sequence_number": seq()},
        )
        emit(
            "response.content_part.added",
            {"content_index": 0, **ids, "part": _text_part(""), "sequence_number": seq()},
        )
        for n, text in enumerate(plan.deltas):
            payload = {
                "content_index": 0,
                "delta": text,
                "item_id": message_id,
                "logprobs": [],
                "obfuscation": obfuscation(n),
                "output_index": index,
                "sequence_number": seq(),
            }
            emit("response.output_text.delta", payload, delta=True)
        emit(
            "response.output_text.done",
            {
                "content_index": 0,
                "item_id": message_id,
                "logprobs": [],
                "output_index": index,
                "sequence_number": seq(),
                "text": plan.text,
            },
        )
        emit(
            "response.content_part.done",
            {"content_index": 0, **ids, "part": _text_part(plan.text), "sequence_number": seq()},
        )
        item = _message(message_id, _final_status(plan), [_text_part(plan.text)])
        emit("response.output_item.done", {"item": item, "output_index": index, "sequence_number": seq()})
    final = _final_status(plan)
    output = _output(plan, reasoning_id, message_id)
    emit(
        f"response.{final}",
        {"response": _response(ex, response_id, final, output, usage(plan)), "sequence_number": seq()},
    )

    def error_event(sent: int) -> bytes:
        b = ex.behaviour
        payload = {
            "type": "error",
            "code": b.error_type or "server_error",
            "message": b.error_message or "The server had an error while processing your request. Sorry about that!",
            "param": None,
            "sequence_number": sent,
        }
        return named_event("error", payload)

    return Script(events, error_event)
