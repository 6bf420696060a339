"""Plan and apply a manifest against the database: transactional, idempotent, never deletes history.

The manifest owns what it declares; a few fields are also changed at run time (CLI, admin API) and
those changes are not undone by re-applying the manifest (docs/manifest.md, "Who owns what"):
- a gateway key's suspension is lifted only by whoever set it (keys_repo.field_owner), and revocation is
  final; the manifest can always make a key stricter;
- a key's expiry set with `keys issue --expires` stays unless the manifest sets one;
- a provider key stored with `upstream set-key` stays in use over the manifest's `env:VAR` until
  `upstream clear-key`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quotagate.errors import ConfigError
from quotagate.ledger.chain import GLOBAL_CHAIN
from quotagate.manifest.desired import KINDS, DesiredState, Row
from quotagate.manifest.load import ManifestError, Problem
from quotagate.store import tables as t
from quotagate.store.audit import record_admin_action
from quotagate.store.config_state import bump_config_version, get_config_state
from quotagate.store.keys_repo import field_owner
from quotagate.store.ledger_repo import lock_org_chain

MODEL_BY_KIND: dict[str, type[Any]] = {
    "upstream": t.Upstream,
    "route": t.Route,
    "credential": t.ProviderCredential,
    "organization": t.Organization,
    "project": t.Project,
    "client": t.Client,
    "gateway_key": t.GatewayKey,
    "quota": t.Quota,
    "alert_receiver": t.AlertReceiver,
    "alert_rule": t.AlertRule,
}
PK_BY_KIND = {
    "upstream": "name",
    "route": "location",
    "credential": "provider",
    "organization": "id",
    "project": "id",
    "client": "id",
    "gateway_key": "key_id",
    "quota": "id",
    "alert_receiver": "id",
    "alert_rule": "id",
}
# The manifest field naming each kind's id, for error paths (a quota's id is derived: its path is enough).
ID_FIELD = {
    "upstream": "name",
    "route": "location",
    "credential": "provider",
    "organization": "organization_id",
    "project": "project_id",
    "client": "client_id",
    "gateway_key": "key_id",
    "alert_receiver": "name",
    "alert_rule": "rule_id",
}
DISABLED = "disabled"
# Gateway-key statuses from least to most restrictive: the manifest can move a key up, never down.
KEY_STATUS_RANK = {"active": 0, "suspended": 1, "revoked": 2}
CONFLICT_SOURCE = "the manifest conflicts with the database"


@dataclass(frozen=True)
class Change:
    action: str  # create | update | disable | note
    kind: str
    ident: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (before, after)
    note: str = ""

    def describe(self) -> str:
        sign = {"create": "+", "update": "~", "disable": "-", "note": "!"}[self.action]
        head = f"{sign} {self.kind} {self.ident}"
        if self.note:
            head += f" ({self.note})"
        if self.action == "update":
            diffs = ", ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in self.fields.items())
            head += f": {diffs}"
        return head


@dataclass(frozen=True)
class Plan:
    changes: list[Change]

    @property
    def empty(self) -> bool:
        return not any(c.action != "note" for c in self.changes)

    def summary(self) -> str:
        counts = {a: sum(1 for c in self.changes if c.action == a) for a in ("create", "update", "disable")}
        return f"{counts['create']} to create, {counts['update']} to change, {counts['disable']} to disable"

    def to_json(self) -> dict[str, Any]:
        return {
            "changes": [
                {
                    "action": c.action,
                    "kind": c.kind,
                    "id": c.ident,
                    "note": c.note or None,
                    "fields": {k: [_jsonable(a), _jsonable(b)] for k, (a, b) in c.fields.items()},
                }
                for c in self.changes
            ],
            "summary": self.summary(),
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, datetime):
        return v.isoformat()
    return v


def _show(v: Any) -> str:
    return "null" if v is None else str(_jsonable(v))


def plan_manifest(session: Session, desired: DesiredState) -> Plan:
    """What applying `desired` would do; ManifestError (path per problem) when it clashes with stored rows."""
    existing = {
        kind: {getattr(row, PK_BY_KIND[kind]): row for row in session.scalars(select(MODEL_BY_KIND[kind]))}
        for kind in KINDS
    }
    conflicts = _conflicts(desired, existing)
    if conflicts:
        raise ManifestError(CONFLICT_SOURCE, conflicts)
    changes: list[Change] = []
    for kind in KINDS:
        for ident, want in desired.rows[kind].items():
            row = existing[kind].get(ident)
            if row is None:
                changes.append(Change("create", kind, ident, {k: (None, v) for k, v in want.items()}))
                continue
            diff = {k: (getattr(row, k), v) for k, v in want.items() if not _same(getattr(row, k), v)}
            note = _keep_runtime_state(session, kind, row, want, diff)
            if note:
                changes.append(Change("note", kind, ident, note=note))
            if diff:
                changes.append(Change("update", kind, ident, diff))
        for ident, row in existing[kind].items():
            if ident in desired.rows[kind] or row.managed_by != "manifest" or row.status in {DISABLED, "revoked"}:
                continue  # a revoked key is already stronger than disabled, and must not come back from it
            changes.append(Change("disable", kind, ident, {"status": (row.status, DISABLED)}, "not in the manifest"))
    changes.extend(_plan_rate_card(session, desired))
    state = get_config_state(session)
    if desired.deployment != (state.deployment or {}):
        changes.append(
            Change(
                "update",
                "deployment",
                desired.deployment["environment_id"],
                {"deployment": (state.deployment, desired.deployment)},
            )
        )
    return Plan(changes)


def _keep_runtime_state(session: Session, kind: str, row: Any, want: Row, diff: dict[str, tuple[Any, Any]]) -> str:
    """Drop from `diff` what would undo a run-time change (see the module doc); a note for the plan, or ''."""
    if kind == "gateway_key":
        if (
            "expires_at" in diff
            and want["expires_at"] is None
            and field_owner(session, row.key_id, "expires_at") != "manifest"
        ):
            diff.pop("expires_at")  # set with `keys issue --expires`; the manifest declares none
        if "status" in diff and row.status in KEY_STATUS_RANK:
            laxer = KEY_STATUS_RANK[want["status"]] < KEY_STATUS_RANK[row.status]
            if laxer and row.status == "revoked":
                diff.pop("status")
                return "revoked keys stay revoked; issue a new key id"
            if laxer and field_owner(session, row.key_id, "status") != "manifest":
                diff.pop("status")
                return f"suspended outside the manifest: `quotagate keys resume {row.key_id}` re-enables it"
    if kind == "credential" and want["source"] == "env" and row.source == "stored" and row.ciphertext is not None:
        diff.pop("source", None)
        return (
            f"uses the key stored with `quotagate upstream set-key`; the manifest's env:{want['env_var']} "
            f"applies after `quotagate upstream clear-key {row.provider}`"
        )
    return ""


def _conflicts(desired: DesiredState, existing: dict[str, dict[str, Any]]) -> list[Problem]:
    """The manifest's objects that clash with stored rows it does not own: ids of rows created through the
    admin API, and slugs already taken (organization slugs are unique, project slugs per organization;
    disabled rows keep theirs)."""
    problems: list[Problem] = []
    for kind in KINDS:
        if kind == "credential":
            continue  # one row per provider, shared with `upstream set-key` (which may create it first)
        for ident in desired.rows[kind]:
            row = existing[kind].get(ident)
            if row is not None and row.managed_by != "manifest":
                field = ID_FIELD.get(kind)
                path = desired.paths[kind][ident] + (f".{field}" if field else "")
                problems.append(
                    Problem(
                        path,
                        f"{kind.replace('_', ' ')} {ident!r} already exists, created through the admin API; "
                        "a manifest cannot take it over: use another id",
                    )
                )
    org_slugs = {row.slug: ident for ident, row in existing["organization"].items()}
    for ident, want in desired.rows["organization"].items():
        holder = org_slugs.get(want["slug"])
        if holder is not None and holder != ident and holder not in desired.rows["organization"]:
            problems.append(
                Problem(
                    desired.paths["organization"][ident] + ".organization_slug",
                    f"slug {want['slug']!r} is already used by organization {holder!r} in the database",
                )
            )
    project_slugs = {(row.organization_id, row.slug): ident for ident, row in existing["project"].items()}
    for ident, want in desired.rows["project"].items():
        holder = project_slugs.get((want["organization_id"], want["slug"]))
        if holder is not None and holder != ident and holder not in desired.rows["project"]:
            problems.append(
                Problem(
                    desired.paths["project"][ident] + ".project_slug",
                    f"slug {want['slug']!r} is already used by project {holder!r} of this organization in the database",
                )
            )
    return problems


def _plan_rate_card(session: Session, desired: DesiredState) -> list[Change]:
    card = desired.rate_card
    if card is None:
        return []
    out: list[Change] = []
    existing = session.get(t.RateCard, card.version)
    if existing is None:
        out.append(Change("create", "rate_card", card.version, note=f"{len(card.entries)} prices"))
    elif existing.content_sha256 != card.content_sha256:
        raise ConfigError(
            f"rate card version {card.version!r} already exists with different prices; rate cards are immutable, "
            "give the new prices a new rate_card_version"
        )
    active = get_config_state(session).active_rate_card
    if active != card.version:
        out.append(Change("update", "active_rate_card", "-", {"version": (active, card.version)}))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        return a is not None and b is not None and Decimal(a) == Decimal(b)
    return bool(a == b)


def apply_plan(session: Session, desired: DesiredState, plan: Plan, actor: str) -> None:
    """Carry out `plan` in the caller's transaction and bump the config version once.

    A clash plan_manifest could not foresee (two slugs swapped in one apply) is a ConfigError, and the
    caller's transaction rolls back: nothing is changed."""
    if plan.empty:
        return
    try:
        _apply(session, desired, plan, actor)
    except IntegrityError as exc:
        raise ConfigError(f"the manifest clashes with rows in the database ({exc.orig}); nothing was changed") from exc


def _apply(session: Session, desired: DesiredState, plan: Plan, actor: str) -> None:
    # Every chain the audit entries extend, locked in sorted order before any row is written (see lock_org_chain).
    for chain in sorted({_org_of(c, desired) or GLOBAL_CHAIN for c in plan.changes if c.action != "note"}):
        lock_org_chain(session, chain)
    now = datetime.now(UTC)
    for change in plan.changes:
        if change.kind in MODEL_BY_KIND:
            _apply_row_change(session, change, desired, now)
        elif change.kind == "rate_card" and desired.rate_card is not None:
            card = desired.rate_card
            session.add(t.RateCard(version=card.version, content_sha256=card.content_sha256, created_at=now))
            session.flush()
            session.add_all(t.RateCardEntry(version=card.version, **entry) for entry in card.entries)
        elif change.kind == "active_rate_card" and desired.rate_card is not None:
            get_config_state(session).active_rate_card = desired.rate_card.version
        elif change.kind == "deployment":
            get_config_state(session).deployment = desired.deployment
        if change.action != "note":
            record_admin_action(
                session,
                actor=actor,
                action=f"manifest.{change.action}",
                target_type=change.kind,
                target_id=change.ident,
                organization_id=_org_of(change, desired),
                before={k: _jsonable(a) for k, (a, _) in change.fields.items()} or None,
                after={k: _jsonable(b) for k, (_, b) in change.fields.items()} or None,
                at=now,
            )
    session.flush()
    bump_config_version(session, now)


def _apply_row_change(session: Session, change: Change, desired: DesiredState, now: datetime) -> None:
    model, pk = MODEL_BY_KIND[change.kind], PK_BY_KIND[change.kind]
    if change.action == "create":
        row: Row = {pk: change.ident, **desired.rows[change.kind][change.ident]}
        session.add(model(**row, managed_by="manifest", created_at=now, updated_at=now))
        session.flush()  # children in later kinds reference this row
    elif change.action in {"update", "disable"}:
        obj = session.get(model, change.ident)
        assert obj is not None
        for name, (_, after) in change.fields.items():
            setattr(obj, name, after)
        obj.updated_at = now


def _org_of(change: Change, desired: DesiredState) -> str | None:
    if change.kind == "organization":
        return change.ident
    row = desired.rows.get(change.kind, {}).get(change.ident)
    return row.get("organization_id") if row else None
