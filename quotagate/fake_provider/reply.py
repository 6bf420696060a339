"""The deterministic reply: its text, how it is chunked, and the usage figures it reports.

Words are chosen so that each one, bare or after a space, is exactly one cl100k token and the
pre-tokenizer splits the reply at every space: a reply of N words is exactly N tokens, so output usage
equals ``count_tokens(reply)`` without tokenizing on the request path (a test checks this).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from quotagate.apis import Api
from quotagate.fake_provider.behaviour import Behaviour
from quotagate.tokens import estimate_prompt_tokens, max_output_tokens, prompt_texts

WORDS: tuple[str, ...] = (
    "the", "quick", "brown", "fox", "over", "lazy", "dog", "gateway",
    "token", "limit", "model", "stream", "reply", "answer", "request", "meter",
    "budget", "cache", "proxy", "policy", "signal", "river", "forest", "window",
    "market", "little", "bright", "quiet", "simple", "silver", "golden", "yellow",
)  # fmt: skip
_SPACED = tuple(" " + word for word in WORDS)


def words(seed: int, count: int) -> list[str]:
    """``count`` one-token pieces starting at ``seed``; the first has no leading space."""
    if count <= 0:
        return []
    n = len(WORDS)
    pieces = [WORDS[seed % n]]
    pieces.extend(_SPACED[(seed + i) % n] for i in range(1, count))
    return pieces


def group(pieces: list[str], chunks: int) -> list[str]:
    """Join one-token pieces into ``chunks`` deltas of near-equal size (0 keeps one token per delta)."""
    if chunks <= 0 or chunks >= len(pieces):
        return pieces
    size, extra = divmod(len(pieces), chunks)
    out: list[str] = []
    start = 0
    for i in range(chunks):
        end = start + size + (1 if i < extra else 0)
        out.append("".join(pieces[start:end]))
        start = end
    return out


_CACHEABLE_BYTES = 64 * 1024  # the cache holds bodies: keep its worst case at 64 MiB


def _prompt_facts(api: Api, raw_body: bytes, body: Mapping[str, Any]) -> tuple[int, int]:
    """(prompt tokens, reply seed) of a body."""
    if len(raw_body) <= _CACHEABLE_BYTES:
        return _cached_prompt_facts(api, raw_body)
    return _compute_prompt_facts(api, body)


@lru_cache(maxsize=1024)
def _cached_prompt_facts(api: Api, raw_body: bytes) -> tuple[int, int]:
    """Cached by the body's bytes: benchmarks send the same body over and over."""
    return _compute_prompt_facts(api, orjson.loads(raw_body))


def _compute_prompt_facts(api: Api, body: Mapping[str, Any]) -> tuple[int, int]:
    seed = zlib.crc32("\x1f".join(prompt_texts(api, body)).encode("utf-8", "surrogatepass"))
    return estimate_prompt_tokens(api, body), seed


@dataclass(frozen=True, slots=True)
class Plan:
    prompt_tokens: int  # every input token, cached ones included (OpenAI's prompt_tokens)
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int  # hidden reasoning or Anthropic thinking; part of output_tokens
    deltas: tuple[str, ...]  # visible text as streamed
    thinking: tuple[str, ...]  # Anthropic thinking text as streamed (empty unless reasoning_tokens)
    visible_tokens: int
    truncated: bool  # the max-tokens cap cut the reply (finish_reason "length")

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    @property
    def output_tokens(self) -> int:
        return self.visible_tokens + self.reasoning_tokens

    @property
    def uncached_input_tokens(self) -> int:
        """Anthropic's input_tokens: the prompt less cache reads and writes."""
        return self.prompt_tokens - self.cached_tokens - self.cache_write_tokens


def make_plan(api: Api, raw_body: bytes, body: Mapping[str, Any], behaviour: Behaviour) -> Plan:
    prompt_tokens, seed = _prompt_facts(api, raw_body, body)
    reasoning = behaviour.reasoning_tokens
    visible = behaviour.output_tokens
    if api is Api.OPENAI_EMBEDDINGS:
        reasoning = visible = 0
    cap = max_output_tokens(api, body)
    truncated = cap is not None and reasoning + visible > cap
    if cap is not None and truncated:
        reasoning = min(reasoning, cap)
        visible = cap - reasoning
    cached = min(behaviour.cached_tokens, prompt_tokens)
    cache_write = min(behaviour.cache_write_tokens, prompt_tokens - cached) if api is Api.ANTHROPIC_MESSAGES else 0
    thinking: list[str] = []
    if api is Api.ANTHROPIC_MESSAGES and reasoning:
        thinking = group(words(seed + 7, reasoning), behaviour.chunks)
    return Plan(
        prompt_tokens=prompt_tokens,
        cached_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
        deltas=tuple(group(words(seed, visible), behaviour.chunks)),
        thinking=tuple(thinking),
        visible_tokens=visible,
        truncated=truncated,
    )
