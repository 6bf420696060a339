"""The standalone client snippets in docs/governance.md agree with the gateway's own code."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from quotagate.governance.actors import (
    ACTOR_HEADER,
    SIGNATURE_HEADER,
    NoncePolicy,
    Verified,
    sign_actor,
    verify_actor,
)
from quotagate.governance.webhooks import sign
from tests.conftest import REPO

DOC = (REPO / "docs" / "governance.md").read_text()


def snippet(marker: str, name: str) -> Callable[..., Any]:
    match = re.search(rf"```python\n# {marker}\n(.*?)```", DOC, re.S)
    assert match, f"no snippet marked {marker} in docs/governance.md"
    scope: dict[str, Any] = {}
    exec(compile(match.group(1), "docs/governance.md", "exec"), scope)  # our own documentation
    return scope[name]  # type: ignore[no-any-return]


def test_actor_snippet_signs_like_the_gateway() -> None:
    actor_headers = snippet("actor-signing-snippet", "actor_headers")
    nonce = "3q2-7wEAAAAAAAAAAAAAAA"
    headers = actor_headers("s3cret", "demo-key.abcdef", now=1767225600, nonce=nonce, user="alice", team="ml")
    expected = sign_actor("s3cret", "demo-key", {"user": "alice", "team": "ml"}, 1767225600, nonce)
    assert headers == {
        "X-Quotagate-Actor": expected[ACTOR_HEADER],
        "X-Quotagate-Actor-Signature": expected[SIGNATURE_HEADER],
    }
    lower = {k.lower(): v for k, v in headers.items()}
    verified = verify_actor(lower, "demo-key", "s3cret", 1767225600, 300, nonce_policy=NoncePolicy.REQUIRED)
    assert isinstance(verified, Verified) and verified.nonce == nonce
    fresh = [actor_headers("s3cret", "demo-key.abcdef", user="alice")["X-Quotagate-Actor-Signature"] for _ in range(2)]
    assert fresh[0].split(",")[1] != fresh[1].split(",")[1]  # a new nonce every call


def test_webhook_snippet_verifies_like_the_gateway() -> None:
    verify = snippet("webhook-verify-snippet", "verify")
    body = b'{"type":"quotagate.alert"}'
    header = sign("whsec", body, 1767225600)
    assert verify("whsec", body, header, now=1767225610)
    assert not verify("whsec", body, header, now=1767225600 + 301)
    assert not verify("whsec", body + b"x", header, now=1767225600)
    assert not verify("other", body, header, now=1767225600)
