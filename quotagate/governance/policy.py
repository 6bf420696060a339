"""The governance part of the in-memory snapshot: IP allowlists and per-project policies, parsed once."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from quotagate.governance.actors import ActorPolicy, NoncePolicy
from quotagate.governance.ip import IpAllowlist

log = logging.getLogger(__name__)


class PromptLogMode(StrEnum):
    OFF = "off"  # metadata only (the default)
    REDACTED = "redacted"  # prompts and responses stored after redaction
    FULL = "full"  # stored as sent and received


@dataclass(frozen=True, slots=True)
class ProjectPolicy:
    actor_policy: ActorPolicy = ActorPolicy.OFF
    actor_secret_env: str | None = None  # the variable holding the signing secret
    actor_nonce: NoncePolicy = NoncePolicy.OPTIONAL
    prompt_mode: PromptLogMode = PromptLogMode.OFF
    retention_days: int = 30
    redact: tuple[tuple[str, str], ...] = ()  # (name, regex) custom redaction rules


DEFAULT_POLICY = ProjectPolicy()


@dataclass(frozen=True)
class Governance:
    # ("project" | "client" | "key", id) -> the allowlist of that scope; absent: any address
    allowlists: Mapping[tuple[str, str], IpAllowlist] = field(default_factory=dict)
    projects: Mapping[str, ProjectPolicy] = field(default_factory=dict)  # only projects with a policy

    def project(self, project_id: str) -> ProjectPolicy:
        return self.projects.get(project_id, DEFAULT_POLICY)


def build_governance(
    allowlists: Iterable[tuple[str, str, list[str] | None]],
    project_settings: Iterable[tuple[str, dict[str, Any] | None, dict[str, Any] | None]],
) -> Governance:
    """From stored rows: (scope_type, id, CIDRs) and (project id, actors, prompt_logging) as the manifest wrote them."""
    parsed: dict[tuple[str, str], IpAllowlist] = {}
    for scope_type, scope_id, cidrs in allowlists:
        if cidrs is not None:
            parsed[(scope_type, scope_id)] = _allowlist(scope_type, scope_id, cidrs)
    projects: dict[str, ProjectPolicy] = {}
    for project_id, actors, prompts in project_settings:
        if actors or prompts:
            actors, prompts = actors or {}, prompts or {}
            secret = str(actors.get("signing_secret") or "")
            projects[project_id] = ProjectPolicy(
                actor_policy=ActorPolicy(actors.get("policy", "off")),
                actor_secret_env=secret.removeprefix("env:") or None,
                actor_nonce=NoncePolicy(actors.get("nonce", "optional")),
                prompt_mode=PromptLogMode(prompts.get("mode", "off")),
                retention_days=int(prompts.get("retention_days", 30)),
                redact=tuple((str(r["name"]), str(r["pattern"])) for r in prompts.get("redact", [])),
            )
    return Governance(parsed, projects)


def _allowlist(scope_type: str, scope_id: str, cidrs: list[str]) -> IpAllowlist:
    good: list[str] = []
    for cidr in cidrs:
        try:
            IpAllowlist.parse([cidr])
            good.append(cidr)
        except ValueError:
            # A bad entry narrows the list (fails closed) instead of failing the whole snapshot.
            log.error("ignoring invalid CIDR %r in the IP allowlist of %s %s", cidr, scope_type, scope_id)
    return IpAllowlist.parse(good)
