"""The governance step of Check: IP allowlists, then the actor policy. Snapshot reads only; the one I/O is
accepting a signed actor's nonce (one call to the nonce store, only for v2 signatures)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from quotagate.errors import BackendUnavailable
from quotagate.gateway.outcome import CheckInput
from quotagate.governance.actors import ACTOR_HEADER, SIGNATURE_HEADER, ActorPolicy, ActorProblem, verify_actor
from quotagate.governance.ip import client_address
from quotagate.governance.replay import MemoryNonces, NonceStore
from quotagate.identity.authenticate import Identity
from quotagate.settings import Settings
from quotagate.snapshot import Snapshot

# Never forwarded to the provider: they are for the gateway only.
GOVERNANCE_HEADERS = (ACTOR_HEADER, SIGNATURE_HEADER)

# Under `required`: (status, reason, message) per problem. A missing actor is missing authentication
# (401); one that was sent but does not verify is refused (403).
_REQUIRED_REFUSALS = {
    ActorProblem.MISSING: (401, "actor_required", "This project requires a signed X-Quotagate-Actor header."),
    ActorProblem.UNSIGNED: (401, "actor_required", "The X-Quotagate-Actor header must be signed."),
    ActorProblem.MALFORMED: (403, "actor_malformed", "The actor or actor signature header is malformed."),
    ActorProblem.EXPIRED: (403, "actor_signature_expired", "The actor signature's timestamp is outside the window."),
    ActorProblem.BAD_SIGNATURE: (403, "actor_signature_invalid", "The actor signature does not verify."),
    ActorProblem.NO_SECRET: (503, "actor_verification_unavailable", "The gateway cannot verify actors right now."),
    ActorProblem.NONCE_REQUIRED: (
        403,
        "actor_nonce_required",
        "This project requires a v2 actor signature with a nonce (n=).",
    ),
    ActorProblem.REPLAYED: (403, "actor_signature_replayed", "This actor signature was already used."),
}


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    reason: str
    message: str
    tags: Mapping[str, str]


class GovernanceGate:
    def __init__(
        self, settings: Settings, environ: Mapping[str, str] = os.environ, nonces: NonceStore | None = None
    ) -> None:
        self._trusted = settings.trusted_proxies
        self._window = settings.actor_signature_window_s
        self._environ = environ
        self._nonces = nonces if nonces is not None else MemoryNonces()

    async def admit(
        self, snapshot: Snapshot, identity: Identity, req: CheckInput, now: float
    ) -> Refusal | dict[str, str]:
        """A refusal, or the tags the request's usage event gets (verified actor, flagged problems)."""
        gov = snapshot.governance
        if gov.allowlists:
            scopes = (("key", identity.key.key_id), ("client", identity.client.id), ("project", identity.project.id))
            applicable = [a for s in scopes if (a := gov.allowlists.get(s)) is not None]
            if applicable:
                addr = client_address(req.client_ip, req.headers.get("x-forwarded-for"), self._trusted)
                if not all(a.allows(addr) for a in applicable):
                    shown = str(addr) if addr is not None else "unknown"
                    return Refusal(
                        403,
                        "ip_not_allowed",
                        f"Requests from {shown} are not allowed for this key.",
                        {"client_ip": shown},
                    )
        policy = gov.project(identity.project.id)
        if policy.actor_policy is ActorPolicy.OFF:
            return {}
        secret = self._environ.get(policy.actor_secret_env or "")
        key_id = identity.key.key_id
        result = verify_actor(req.headers, key_id, secret, now, self._window, nonce_policy=policy.actor_nonce)
        if not isinstance(result, ActorProblem) and result.nonce is not None:
            # Remembered until the signature's timestamp leaves the window: then it is refused as expired.
            ttl_s = result.timestamp + self._window - now + 1
            try:
                if not await self._nonces.first_use(identity.org.id, key_id, result.nonce, ttl_s):
                    result = ActorProblem.REPLAYED
            except BackendUnavailable:
                if policy.actor_policy is ActorPolicy.REQUIRED:  # fail closed, as for a missing secret
                    status, reason, message = _REQUIRED_REFUSALS[ActorProblem.NO_SECRET]
                    return Refusal(status, reason, message, {"actor.status": "nonce_unchecked"})
                return {"actor.status": "nonce_unchecked"}  # optional: not attributed, flagged
        if not isinstance(result, ActorProblem):
            return result.tags()
        if policy.actor_policy is ActorPolicy.REQUIRED:
            status, reason, message = _REQUIRED_REFUSALS[result]
            return Refusal(status, reason, message, {"actor.status": result.value})
        # optional: a bad or unsigned actor is ignored, but flagged on the usage event.
        return {} if result is ActorProblem.MISSING else {"actor.status": result.value}
