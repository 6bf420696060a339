"""The ticket: what the admission side hands the response side (Envoy dynamic metadata, or in-process)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from quotagate.apis import Api, Provider


@dataclass(frozen=True, slots=True)
class Ticket:
    request_id: str
    started_at: float  # epoch seconds
    org_id: str
    project_id: str
    client_id: str
    key_id: str
    provider: Provider
    api: Api
    model: str  # the bare model sent to the provider
    model_requested: str  # as the client wrote it (maybe provider-prefixed)
    stream: bool
    reservation_id: str
    reserved_tokens: int
    reserved_nanos: int
    prompt_estimate: int
    upstream: str = ""
    inject_include_usage: bool = False  # the body must get stream_options.include_usage (ext_proc / addon)
    rewrite_model: bool = False  # the body's model must lose its provider/ prefix
    front_door: str = "envoy"
    monitored: tuple[str, ...] = ()  # monitor-mode limits this request would have exceeded
    tags: Mapping[str, str] = field(default_factory=dict)
    remaining_requests: int | None = None
    remaining_tokens: int | None = None

    @property
    def needs_body_rewrite(self) -> bool:
        return self.inject_include_usage or self.rewrite_model

    def to_metadata(self) -> dict[str, Any]:
        """Flat JSON-able fields (a protobuf Struct on the Envoy path)."""
        # Shallow on purpose: every field is flat but `tags`, copied below. (asdict's deep copy was most
        # of the cost of answering a Check.)
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["provider"] = self.provider.value
        data["api"] = self.api.value
        data["monitored"] = ",".join(self.monitored)
        data["tags"] = dict(self.tags)
        return data

    @classmethod
    def from_metadata(cls, data: Mapping[str, Any]) -> Ticket:
        """Inverse of to_metadata; protobuf Structs turn ints into floats, so numbers are coerced back."""
        return cls(
            request_id=str(data["request_id"]),
            started_at=float(data["started_at"]),
            org_id=str(data["org_id"]),
            project_id=str(data["project_id"]),
            client_id=str(data["client_id"]),
            key_id=str(data["key_id"]),
            provider=Provider(data["provider"]),
            api=Api(data["api"]),
            model=str(data["model"]),
            model_requested=str(data["model_requested"]),
            stream=bool(data["stream"]),
            reservation_id=str(data["reservation_id"]),
            reserved_tokens=int(data["reserved_tokens"]),
            reserved_nanos=int(data["reserved_nanos"]),
            prompt_estimate=int(data["prompt_estimate"]),
            upstream=str(data.get("upstream", "")),
            inject_include_usage=bool(data.get("inject_include_usage", False)),
            rewrite_model=bool(data.get("rewrite_model", False)),
            front_door=str(data.get("front_door", "envoy")),
            monitored=tuple(m for m in str(data.get("monitored", "")).split(",") if m),
            tags={str(k): str(v) for k, v in dict(data.get("tags") or {}).items()},
            remaining_requests=_opt_int(data.get("remaining_requests")),
            remaining_tokens=_opt_int(data.get("remaining_tokens")),
        )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
