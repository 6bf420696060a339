"""Alert webhooks: the bodies (generic JSON, Slack-compatible), the HMAC signature and its verification.

Signature header (Stripe-style)::

    X-Quotagate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256(secret, "<t>.<raw body>")>

A receiver recomputes the HMAC over the timestamp, a dot and the exact body bytes, compares in
constant time, and rejects timestamps outside its tolerance (replays of an old delivery). Retries of
one delivery carry the same `X-Quotagate-Delivery` id, so a receiver can also drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import httpx
import orjson

SIGNATURE_HEADER = "X-Quotagate-Signature"
DELIVERY_HEADER = "X-Quotagate-Delivery"
EVENT_HEADER = "X-Quotagate-Event"
DEFAULT_TOLERANCE_S = 300


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The X-Quotagate-Signature value of `body` at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: str,
    body: bytes,
    header: str,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when `header` (X-Quotagate-Signature) signs `body` (the raw bytes received) with `secret`
    and its timestamp is within `tolerance_s` of `now`. Any `v1=` value may match (secret rotation)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    return matched


def json_body(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def slack_body(event: dict[str, Any]) -> bytes:
    """Slack incoming-webhook shape: `text` is what every Slack-compatible tool shows."""
    prefix = "[test] " if event.get("test") else ""
    scope = event.get("scope", {})
    where = f"{event.get('organization', {}).get('slug', '')} / {scope.get('type', '')} {scope.get('name', '')}"
    return orjson.dumps(
        {
            "text": f":rotating_light: {prefix}Quotagate alert: {event['message']}",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{prefix}{event['message']}*"}},
                {
                    "type": "context",
                    "elements": [
                        {
                            "type": "mrkdwn",
                            "text": f"{where} · rule `{event['rule']['id']}` · {event['threshold']} · {event['period']}",
                        }
                    ],
                },
            ],
        }
    )


def post(
    client: httpx.Client, url: str, body: bytes, *, secret: str | None, delivery_id: str, now: float
) -> str | None:
    """POST one delivery; None on a 2xx answer, else what went wrong (the caller retries)."""
    headers = {
        "content-type": "application/json",
        "user-agent": "Quotagate-Alerts/1",
        EVENT_HEADER: "alert",
        DELIVERY_HEADER: delivery_id,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body, int(now))
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{exc.__class__.__name__}: {exc}"[:500]
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}: {response.text[:200]}"
