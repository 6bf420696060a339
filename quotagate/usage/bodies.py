"""Reading a whole JSON response body, one function per API: usage, model, error and generated text."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import orjson

from quotagate.usage.anthropic_usage import anthropic_usage
from quotagate.usage.error_text import describe_error
from quotagate.usage.model import Usage
from quotagate.usage.openai_usage import chat_usage, responses_usage
from quotagate.usage.state import ParseState, UsageMapper

# Reads a whole parsed body: model, error and text onto the state; returns the usage.
BodyReader = Callable[[object, ParseState], Usage | None]


def chat_body(obj: object, state: ParseState) -> Usage | None:
    body = _top(obj, state)
    if body is None:
        return None
    for choice in _dicts(body.get("choices")):
        message = choice.get("message")
        if isinstance(message, dict):
            _texts(message, ("content", "refusal", "reasoning_content", "reasoning"), state)
            for call in _dicts(message.get("tool_calls")):
                function = call.get("function")
                if isinstance(function, dict):
                    _texts(function, ("name", "arguments"), state)
            legacy_call = message.get("function_call")
            if isinstance(legacy_call, dict):
                _texts(legacy_call, ("name", "arguments"), state)
    return _usage(body, chat_usage, state)


def completions_body(obj: object, state: ParseState) -> Usage | None:
    body = _top(obj, state)
    if body is None:
        return None
    for choice in _dicts(body.get("choices")):
        _texts(choice, ("text",), state)
    return _usage(body, chat_usage, state)


def embeddings_body(obj: object, state: ParseState) -> Usage | None:
    body = _top(obj, state)
    return None if body is None else _usage(body, chat_usage, state)


def responses_body(obj: object, state: ParseState) -> Usage | None:
    body = _top(obj, state)
    if body is None:
        return None
    for item in _dicts(body.get("output")):
        kind = item.get("type")
        if kind == "message":
            for part in _dicts(item.get("content")):
                _texts(part, ("text", "refusal"), state)
        elif kind == "reasoning":
            for part in (*_dicts(item.get("summary")), *_dicts(item.get("content"))):
                _texts(part, ("text",), state)
        else:  # function_call, custom_tool_call, mcp_call...: name and arguments/input are generated
            _texts(item, ("name", "arguments", "input"), state)
    return _usage(body, responses_usage, state)


def anthropic_body(obj: object, state: ParseState) -> Usage | None:
    body = _top(obj, state)
    if body is None:
        return None
    for block in _dicts(body.get("content")):
        kind = block.get("type")
        if kind == "text":
            _texts(block, ("text",), state)
        elif kind == "thinking":
            _texts(block, ("thinking",), state)
        elif kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
            _texts(block, ("name",), state)
            if "input" in block:
                state.add_text(orjson.dumps(block["input"]).decode())
    return _usage(body, anthropic_usage, state)


def _top(obj: object, state: ParseState) -> dict[str, object] | None:
    if not isinstance(obj, dict):
        state.malformed = True
        return None
    state.set_model(obj.get("model"))
    if obj.get("type") == "error" or isinstance(obj.get("error"), dict):
        state.set_error(describe_error(obj))
    return obj


def _usage(body: dict[str, object], mapper: UsageMapper, state: ParseState) -> Usage | None:
    usage = body.get("usage")
    if isinstance(usage, dict):
        return mapper(usage, state)
    if usage is not None:
        state.malformed = True
    return None


def _dicts(value: object) -> Iterator[dict[str, object]]:
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                yield item


def _texts(obj: dict[str, object], keys: tuple[str, ...], state: ParseState) -> None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str):
            state.add_text(value)
