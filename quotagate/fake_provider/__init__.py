"""An OpenAI- and Anthropic-compatible fake LLM provider for demos, tests and benchmarks.

Deterministic replies, real-tokenizer usage, recorded-wire-format JSON and SSE, and per-request knobs
(``x-fake-*`` headers, see ``behaviour``) for pacing, cached/reasoning tokens and injected faults.
Tests start one with ``quotagate.fake_provider.testing.running_fake_provider``; README.md beside this
file lists the endpoints and every ``x-fake-*`` header.
"""

from quotagate.fake_provider.app import build_app
from quotagate.fake_provider.behaviour import Behaviour
from quotagate.fake_provider.config import FakeConfig
from quotagate.fake_provider.server import bind, make_server, run, serve

__all__ = ["Behaviour", "FakeConfig", "bind", "build_app", "make_server", "run", "serve"]
