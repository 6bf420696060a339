"""What a renderer needs to answer one request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quotagate.apis import Api
from quotagate.fake_provider.behaviour import Behaviour
from quotagate.fake_provider.reply import Plan


@dataclass(frozen=True, slots=True)
class Exchange:
    api: Api
    body: Mapping[str, Any]
    model: str
    plan: Plan
    behaviour: Behaviour
    request_id: str
    created: int  # unix seconds

    def stream_option(self, name: str, default: bool) -> bool:
        options = self.body.get("stream_options")
        value = options.get(name) if isinstance(options, Mapping) else None
        return value if isinstance(value, bool) else default
