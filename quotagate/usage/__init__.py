"""Token usage: what a provider reports back, read incrementally from JSON bodies and SSE streams."""

from quotagate.usage.factory import is_event_stream, parser_for
from quotagate.usage.model import ZERO_USAGE, Usage, UsageSource
from quotagate.usage.parser import ParseResult, UsageParser

__all__ = ["ZERO_USAGE", "ParseResult", "Usage", "UsageParser", "UsageSource", "is_event_stream", "parser_for"]
