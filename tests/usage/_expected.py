"""Expected figures for every recorded provider response, written by hand.

Each entry was derived from the recording (meta.json ``usage_observed`` and the body) by applying the
normalisation rules of ``quotagate.usage.model``; none of it is computed by the parsers.
"""

from __future__ import annotations

from dataclasses import dataclass

from quotagate.usage import Usage


def u(input_: int, cached: int, write: int, output: int, reasoning: int) -> Usage:
    return Usage(
        input_tokens=input_,
        cached_input_tokens=cached,
        cache_write_tokens=write,
        output_tokens=output,
        reasoning_tokens=reasoning,
    )


@dataclass(frozen=True)
class Expected:
    usage: Usage | None
    model: str | None
    error: str | None = None
    text: str | None = None  # the whole generated text, when short enough to write out
    starts: str = ""
    contains: tuple[str, ...] = ()


NO_USAGE_TEXT = (
    "Hi there! How can I help today? I can answer questions, explain concepts, help with writing or "
    "brainstorming, code, plan something, and more. Tell me what you\u2019d like to work on or a topic "
    "you\u2019re curious about."
)

EXPECTED: dict[str, Expected] = {
    # --- OpenAI chat: input = prompt_tokens - cached_tokens; output = completion_tokens (reasoning incl.)
    "openai/chat-basic-gpt-5-nano": Expected(
        u(8, 0, 0, 377, 320),
        "gpt-5-nano-2025-08-07",
        starts="Hi there! How can I help you today?",
        contains=("Tell me what you\u2019d like to do.",),
    ),
    "openai/chat-cached-tokens-multi-turn-gpt-4o": Expected(
        u(3806 - 3072, 3072, 0, 76, 0),
        "gpt-4o-2024-08-06",
        starts='Ah, "I see what you did there."',
        contains=('"This is the Way!"',),
    ),
    "openai/chat-stream-include-usage-gpt-4o": Expected(
        u(14, 0, 0, 8, 0), "gpt-4o-2024-08-06", text="The capital of Mexico is Mexico City."
    ),
    "openai/chat-stream-no-usage-gpt-5-nano": Expected(None, "gpt-5-nano-2025-08-07", text=NO_USAGE_TEXT),
    "openai/chat-stream-reasoning-usage-gpt-5-nano": Expected(u(12, 0, 0, 100, 100), "gpt-5-nano-2025-08-07", text=""),
    "openai/chat-stream-tool-calls-gpt-4o-mini": Expected(
        u(54, 0, 0, 20, 0), "gpt-4o-mini-2024-07-18", text='multiply{"a":1231,"b":2331}'
    ),
    "openai/chat-tool-calls-parallel-gpt-5-nano": Expected(
        u(162, 0, 0, 219, 192),
        "gpt-5-nano-2025-08-07",
        text='get_current_weather{"location":"San Francisco, CA"}',
    ),
    # --- OpenAI legacy completions and embeddings: prompt/completion only
    "openai/completions-basic-babbage": Expected(
        u(31, 0, 0, 25, 0),
        "babbage:2023-07-21-v2",
        text=" + fib(n-3) + fib(n-4)\n\ndef fib(n):\n    if n <= 1:\n        return",
    ),
    "openai/completions-stream-include-usage": Expected(
        u(31, 0, 0, 25, 0),
        "babbage:2023-07-21-v2",
        text=" + fib(n-3) + fib(n-4)\n\ndef fibn(n):\n    if n <= 1:\n       ",
    ),
    "openai/embeddings-float": Expected(u(7, 0, 0, 0, 0), "text-embedding-3-small", text=""),
    "openai/embeddings-dimensions-base64": Expected(u(5, 0, 0, 0, 0), "text-embedding-3-small", text=""),
    # --- OpenAI Responses: input = input_tokens - cached_tokens
    "openai/responses-basic-gpt-5.5": Expected(u(11, 0, 0, 5, 0), "gpt-5.5-2026-04-23", text="pong"),
    "openai/responses-cached-tokens-gpt-4o": Expected(
        u(3763 - 3584, 3584, 0, 44, 0),
        "gpt-4o-2024-08-06",
        text=(
            '"I have altered the deal. Pray I do not alter it further." If there\'s anything specific '
            "you'd like to change or add, just let me know. Otherwise, \"I've got a bad feeling about "
            'this!" \U0001f4ab'
        ),
    ),
    "openai/responses-stream-basic-gpt-5.5": Expected(u(11, 0, 0, 5, 0), "gpt-5.5-2026-04-23", text="pong"),
    "openai/responses-stream-tool-call-gpt-5.5": Expected(
        u(58, 0, 0, 23, 0), "gpt-5.5-2026-04-23", text='multiply{"a":1231,"b":2331}'
    ),
    "openai/responses-stream-cached-reasoning-web-search": Expected(
        u(9463 - 8320, 8320, 0, 582, 512),
        "gpt-5-2025-08-07",
        text=(
            "San Francisco weather today (Tuesday, September 16, 2025): Mostly sunny and pleasant. "
            "Current conditions around 71\u00b0F; expected high near 73\u00b0F and low around 58\u00b0F. "
            "A light jacket is useful for the cooler evening. "
        ),
    ),
    # --- OpenAI error bodies
    "openai/error-chat-400-unsupported-parameter": Expected(
        None,
        None,
        error="invalid_request_error (unsupported_parameter): Unsupported parameter: 'max_tokens' is not "
        "supported with this model. Use 'max_completion_tokens' instead.",
        text="",
    ),
    "openai/error-responses-401-invalid-api-key": Expected(
        None,
        None,
        error="invalid_request_error (invalid_api_key): Incorrect API key provided: invalid-*****2345. "
        "You can find your API key at https://platform.openai.com/account/api-keys.",
        text="",
    ),
    "openai/error-embeddings-400": Expected(
        None, None, error="invalid_request_error: -1 is less than the minimum of 1 - 'dimensions'", text=""
    ),
    # --- Anthropic: input_tokens exclude cache reads/writes; stream: last figures win
    "anthropic/messages-basic-sonnet-4": Expected(u(17, 0, 0, 12, 0), "claude-sonnet-4-20250514", text="4200 + 42 = "),
    "anthropic/messages-cache-creation-system": Expected(
        u(8, 0, 4167, 204, 0),
        "claude-sonnet-4-20250514",
        starts="**General Kenobi!**",
        contains=("the enthusiasm of R2-D2*",),
    ),
    "anthropic/messages-cache-read-system": Expected(
        u(12, 4167, 0, 350, 0),
        "claude-sonnet-4-20250514",
        starts="*adjusts imaginary protocol droid posture*",
    ),
    "anthropic/messages-tool-use-nonstream": Expected(
        u(421, 0, 0, 74, 0),
        "claude-sonnet-4-20250514",
        text='I\'ll use the test tool with the passphrase you provided.passphrase_test_tool{"passphrase":"portal"}',
    ),
    # message_start 17/0/0/1, message_delta output 10
    "anthropic/messages-stream-basic-sonnet-4-5": Expected(
        u(17, 0, 0, 10, 0), "claude-sonnet-4-5-20250929", text="- Captain\n- Scoop"
    ),
    # message_start input 2060, cache 0/0; message_delta restates input 2081, write 7621, read 28247
    "anthropic/messages-stream-web-search-cache-in-message-delta": Expected(
        u(2081, 28247, 7621, 574, 0),
        "claude-sonnet-4-20250514",
        starts='web_search{"query": "bitcoin price January 1 2026"}',
        contains=('{"query": "\\"January 1 2026\\" bitcoin historical price data"}',),
    ),
    # message_start output 40, message_delta output 40; the tool input is empty
    "anthropic/messages-stream-tool-use-haiku-4-5": Expected(
        u(543, 0, 0, 40, 0), "claude-haiku-4-5-20251001", text="pelican_name_generator"
    ),
    # message_start input 702, message_delta input 1591 (tool search ran server-side)
    "anthropic/messages-stream-tool-search-server-and-client-tool": Expected(
        u(1591, 0, 0, 175, 0),
        "claude-sonnet-4-6",
        text="Let me search for a tool that can provide current exchange rate information."
        'tool_search_tool_bm25{"query": "USD EUR exchange rate currency conversion"}'
        "I found the right tool! Let me fetch the current USD to EUR exchange rate for you."
        'get_exchange_rate{"from_currency": "USD", "to_currency": "EUR"}',
    ),
    "anthropic/messages-stream-thinking-haiku-4-5": Expected(
        u(46, 0, 0, 133, 0),
        "claude-haiku-4-5-20251001",
        starts="The user wants two names for a pet pelican, and they want me to be brief.",
        contains=("1. **Pouch** - references their iconic bill pouch\n2. **Pel\u00e9** - play",),
    ),
    # message_delta output 92 with output_tokens_details.thinking_tokens 53
    "anthropic/messages-stream-thinking-tool-use-thinking-tokens-detail": Expected(
        u(598, 0, 0, 92, 53),
        "claude-haiku-4-5-20251001",
        text="The user wants me to:\n1. Use the fixed_version tool\n2. Tell them the version\n3. Make a short "
        "joke about it\n\nLet me first call the fixed_version tool to see what version it returns."
        "fixed_version",
    ),
    "anthropic/error-400-invalid-request": Expected(
        None,
        None,
        error="invalid_request_error: messages.0: all messages must have non-empty content except for the "
        "optional final assistant message",
        text="",
    ),
    "anthropic/error-404-not-found-stream-request": Expected(
        None, None, error="not_found_error: model: invalid-model-that-does-not-exist-12345", text=""
    ),
}
