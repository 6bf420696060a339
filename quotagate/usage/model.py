"""Normalised token usage, the same for every provider.

Each token is counted in exactly one billable class, so pricing multiplies each class by its own rate
and never double-counts:

* OpenAI ``prompt_tokens``/``input_tokens`` *include* cached tokens, so
  ``input_tokens = prompt_tokens - cached_tokens``.
* Anthropic ``input_tokens`` *exclude* cache reads and writes, so they map one to one.
* ``output_tokens`` include reasoning tokens (both providers bill reasoning as output);
  ``reasoning_tokens`` is informational, a subset of ``output_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class UsageSource(StrEnum):
    REPORTED = "reported"  # the provider's own usage figures
    ESTIMATED = "estimated"  # counted by Quotagate (cut stream, disconnect, no usage chunk)
    NONE = "none"  # nothing billable (upstream error, denied request)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0  # uncached input, billed at the input rate
    cached_input_tokens: int = 0  # cache reads, billed at the cache-read rate
    cache_write_tokens: int = 0  # cache creation (Anthropic), billed at the cache-write rate
    output_tokens: int = 0  # all output, reasoning included, billed at the output rate
    reasoning_tokens: int = 0  # subset of output_tokens, not billed separately
    source: UsageSource = UsageSource.REPORTED

    @property
    def prompt_tokens(self) -> int:
        """Every input token, whatever its cache class (OpenAI's ``prompt_tokens``)."""
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


ZERO_USAGE = Usage(source=UsageSource.NONE)
