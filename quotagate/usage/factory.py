"""The parser for a response: chosen by API and by whether the response (not the request) streams."""

from __future__ import annotations

from quotagate.apis import Api
from quotagate.usage.anthropic_stream import AnthropicStreamParser
from quotagate.usage.anthropic_usage import anthropic_usage
from quotagate.usage.bodies import (
    BodyReader,
    anthropic_body,
    chat_body,
    completions_body,
    embeddings_body,
    responses_body,
)
from quotagate.usage.body import JsonBodyParser
from quotagate.usage.openai_stream import COMPLETIONS_TEXT, OpenAIStreamParser
from quotagate.usage.openai_usage import chat_usage, responses_usage
from quotagate.usage.parser import UsageParser
from quotagate.usage.responses_stream import ResponsesStreamParser
from quotagate.usage.state import UsageMapper

_BODIES: dict[Api, tuple[BodyReader, UsageMapper]] = {
    Api.OPENAI_CHAT: (chat_body, chat_usage),
    Api.OPENAI_COMPLETIONS: (completions_body, chat_usage),
    Api.OPENAI_EMBEDDINGS: (embeddings_body, chat_usage),
    Api.OPENAI_RESPONSES: (responses_body, responses_usage),
    Api.ANTHROPIC_MESSAGES: (anthropic_body, anthropic_usage),
}


def parser_for(api: Api, *, streaming: bool) -> UsageParser:
    """A fresh parser for one response body.

    ``streaming`` must come from the response's Content-Type (:func:`is_event_stream`), not from the
    request: a ``stream: true`` request that fails is answered with a JSON error body.
    """
    if not streaming:
        read, usage = _BODIES[api]
        return JsonBodyParser(read, usage)
    if api is Api.ANTHROPIC_MESSAGES:
        return AnthropicStreamParser()
    if api is Api.OPENAI_RESPONSES:
        return ResponsesStreamParser()
    if api is Api.OPENAI_COMPLETIONS:
        return OpenAIStreamParser(text=COMPLETIONS_TEXT)
    return OpenAIStreamParser()  # chat; embeddings never stream, but would chunk the same way


def is_event_stream(content_type: str | None) -> bool:
    """Whether a response Content-Type announces SSE (``text/event-stream``, any parameters)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"
