"""What a reservation carries for the sweeper: enough to record and charge a request whose process died.

Kept as an opaque string with the reservation in the counter backend (``ReservationRequest.note``), because the
process that sweeps it may not be the one that admitted it, and nothing else about the request survives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson


@dataclass(frozen=True, slots=True)
class SweepNote:
    project_id: str
    client_id: str
    key_id: str
    provider: str
    api: str
    model: str  # the bare model sent to the provider (its price)
    model_requested: str
    stream: bool
    prompt_tokens: int  # the admission's prompt estimate: what a swept request is charged
    front_door: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def encode(self) -> str:
        return orjson.dumps(
            {
                "p": self.project_id,
                "c": self.client_id,
                "k": self.key_id,
                "pr": self.provider,
                "a": self.api,
                "m": self.model,
                "mr": self.model_requested,
                "s": self.stream,
                "n": self.prompt_tokens,
                "d": self.front_door,
                "t": dict(self.tags),
            }
        ).decode()

    @classmethod
    def decode(cls, text: str) -> SweepNote | None:
        """The note, or None for an empty or unreadable one (the sweep then records what the reservation holds)."""
        if not text:
            return None
        try:
            d = orjson.loads(text)
            return cls(
                project_id=str(d["p"]),
                client_id=str(d["c"]),
                key_id=str(d["k"]),
                provider=str(d["pr"]),
                api=str(d["a"]),
                model=str(d["m"]),
                model_requested=str(d["mr"]),
                stream=bool(d["s"]),
                prompt_tokens=max(int(d["n"]), 0),
                front_door=str(d.get("d", "")),
                tags={str(k): str(v) for k, v in dict(d.get("t") or {}).items()},
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None
