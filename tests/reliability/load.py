"""Requests for load and fault tests: bodies per API, one async sender that records what the client saw."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

# (path, body builder, stream?) per kind of request the mixes use.
KINDS = ("chat", "chat_stream", "responses", "responses_stream", "messages", "messages_stream", "embeddings")


def body_for(kind: str, i: int, *, max_tokens: int = 64, model: str | None = None) -> tuple[str, dict[str, Any]]:
    prompt = f"Request {i}: tell me something about reliability."
    stream = kind.endswith("_stream")
    if kind.startswith("chat"):
        body: dict[str, Any] = {
            "model": model or "gpt-4o-mini",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": prompt}],
        }
        path = "/v1/chat/completions"
    elif kind.startswith("responses"):
        body = {"model": model or "gpt-5.4-mini", "max_output_tokens": max_tokens, "input": prompt}
        path = "/v1/responses"
    elif kind.startswith("messages"):
        body = {
            "model": model or "claude-haiku-4-5",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": prompt}],
        }
        path = "/v1/messages"
    elif kind == "embeddings":
        body = {"model": model or "text-embedding-3-small", "input": prompt}
        path = "/v1/embeddings"
    else:
        raise ValueError(kind)
    if stream:
        body["stream"] = True
    return path, body


def auth_headers(kind: str, credential: str) -> dict[str, str]:
    if kind.startswith("messages"):
        return {"x-api-key": credential, "anthropic-version": "2023-06-01"}
    return {"authorization": f"Bearer {credential}"}


@dataclass
class Result:
    kind: str
    status: int  # 0: the client saw a transport error
    request_id: str | None
    deny_reason: str | None
    body: bytes = b""
    error: str | None = None


@dataclass
class Tally:
    results: list[Result] = field(default_factory=list)

    def add(self, result: Result) -> None:
        self.results.append(result)

    def statuses(self) -> Counter[int]:
        return Counter(r.status for r in self.results)

    def reasons(self) -> Counter[str | None]:
        return Counter(r.deny_reason for r in self.results if r.status != 200)

    def ok(self) -> list[Result]:
        return [r for r in self.results if r.status == 200]


async def send(
    client: httpx.AsyncClient,
    kind: str,
    i: int,
    credential: str,
    *,
    max_tokens: int = 64,
    headers: dict[str, str] | None = None,
    model: str | None = None,
    disconnect_after: int | None = None,
) -> Result:
    """One request; streams are read to their end (or, with `disconnect_after`, abandoned after that many
    body chunks: the client disconnects mid-stream)."""
    path, body = body_for(kind, i, max_tokens=max_tokens, model=model)
    all_headers = {**auth_headers(kind, credential), **(headers or {})}
    try:
        async with client.stream("POST", path, json=body, headers=all_headers) as response:
            chunks: list[bytes] = []
            n = 0
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
                n += 1
                if disconnect_after is not None and n >= disconnect_after:
                    break
            return Result(
                kind,
                response.status_code,
                response.headers.get("x-quotagate-request-id"),
                response.headers.get("x-quotagate-deny-reason"),
                b"".join(chunks),
            )
    except httpx.HTTPError as exc:
        return Result(kind, 0, None, None, error=f"{exc.__class__.__name__}: {exc}")


async def burst(
    base_url: str,
    jobs: Iterable[tuple[str, int, str, dict[str, Any]]],
    *,
    connections: int = 500,
    timeout_s: float = 120.0,
) -> Tally:
    """Send every job (kind, i, credential, send() options) at once; the tally keeps job order."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout_s) as client:
        results = await asyncio.gather(
            *(send(client, kind, i, credential, **options) for kind, i, credential, options in jobs)
        )
    tally = Tally()
    for result in results:
        tally.add(result)
    return tally


def shuffled(items: list[Any], seed: int = 11) -> list[Any]:
    rng = random.Random(seed)
    out = list(items)
    rng.shuffle(out)
    return out
