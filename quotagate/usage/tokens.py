"""Reading token counts from provider JSON: wrong types count as absent, absurd values are clamped."""

from __future__ import annotations

import math

from quotagate.usage.state import ParseState

# Far above any context window or embeddings batch: a larger figure is corrupt, not a big request.
MAX_TOKENS = 100_000_000


def token_count(obj: dict[str, object], key: str, state: ParseState) -> int | None:
    """``obj[key]`` as a token count; None when absent or null. Flags anything odd as malformed."""
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is float and math.isfinite(value) and value.is_integer():
        value = int(value)  # some OpenAI-compatible servers send 12.0
    if type(value) is not int:  # bool is an int subclass, and not a count
        state.malformed = True
        return None
    if value < 0:
        state.malformed = True
        return None
    if value > MAX_TOKENS:
        state.malformed = True
        return MAX_TOKENS
    return value


def sub_object(obj: dict[str, object], key: str, state: ParseState) -> dict[str, object]:
    """A nested details object, or an empty one when absent, null or of the wrong type."""
    value = obj.get(key)
    if isinstance(value, dict):
        return value
    if value is not None:
        state.malformed = True
    return {}


def subset(part: int, whole: int, state: ParseState) -> int:
    """A count that must not exceed the one it is part of (cached of prompt, reasoning of output)."""
    if part > whole:
        state.malformed = True
        return whole
    return part
