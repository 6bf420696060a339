"""OpenAI usage objects to :class:`Usage`.

``prompt_tokens``/``input_tokens`` include cached tokens, so the uncached input is their difference;
``completion_tokens``/``output_tokens`` include reasoning tokens, which stay a subset.
"""

from __future__ import annotations

from quotagate.usage.model import Usage
from quotagate.usage.state import ParseState
from quotagate.usage.tokens import sub_object, subset, token_count


def chat_usage(usage: dict[str, object], state: ParseState) -> Usage | None:
    """Chat completions, legacy completions and embeddings: ``prompt_tokens``/``completion_tokens``."""
    return _usage(usage, state, "prompt_tokens", "completion_tokens")


def responses_usage(usage: dict[str, object], state: ParseState) -> Usage | None:
    """The Responses API: ``input_tokens``/``output_tokens``."""
    return _usage(usage, state, "input_tokens", "output_tokens")


def _usage(usage: dict[str, object], state: ParseState, input_key: str, output_key: str) -> Usage | None:
    prompt = token_count(usage, input_key, state)
    output = token_count(usage, output_key, state)
    if prompt is None and output is None:
        state.malformed = True  # a usage object without either count cannot be billed
        return None
    prompt = prompt or 0
    output = output or 0
    prefix = input_key.removesuffix("_tokens")
    cached = token_count(sub_object(usage, f"{prefix}_tokens_details", state), "cached_tokens", state)
    out_prefix = output_key.removesuffix("_tokens")
    reasoning = token_count(sub_object(usage, f"{out_prefix}_tokens_details", state), "reasoning_tokens", state)
    cached = subset(cached or 0, prompt, state)
    return Usage(
        input_tokens=prompt - cached,
        cached_input_tokens=cached,
        output_tokens=output,
        reasoning_tokens=subset(reasoning or 0, output, state),
    )
