"""What a developer sees: each flow's comment, marker and metadata, and the usage summary printed on exit."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mitmproxy import http

from quotagate.gateway.outcome import Deny
from quotagate.gateway.ticket import Ticket
from quotagate.metering.record import UsageRecord
from quotagate.money import units
from quotagate.usage.model import UsageSource

DENIED_MARK = ":no_entry:"
ESTIMATED_MARK = ":warning:"  # charged for a cut or failed exchange: worth a look
METADATA_KEY = "quotagate"


def money(nanos: int, unit: str | None) -> str:
    """Nanos as the shortest exact amount, e.g. '0.0000114 usd'."""
    amount = format(units(nanos).normalize(), "f")
    return f"{amount} {unit}" if unit else amount


def note_admitted(flow: http.HTTPFlow, ticket: Ticket) -> None:
    flow.comment = (
        f"{ticket.model}: allowed, reserved {ticket.reserved_tokens} tokens / {money(ticket.reserved_nanos, None)}"
    )
    flow.metadata[METADATA_KEY] = {
        "request_id": ticket.request_id,
        "key_id": ticket.key_id,
        "model": ticket.model,
        "upstream": ticket.upstream,
        "reserved_tokens": ticket.reserved_tokens,
        "reserved_nanos": ticket.reserved_nanos,
    }


def note_metered(flow: http.HTTPFlow, record: UsageRecord, budget_left: list[str]) -> None:
    u = record.usage
    parts = [
        f"{record.model_served or record.model_requested}: {u.prompt_tokens} in / {u.output_tokens} out tokens",
        f"{money(record.cost.total_nanos, record.cost.unit)} ({u.source.value})",
    ]
    if budget_left:
        parts.append("left: " + ", ".join(budget_left))
    if record.error:
        parts.append(record.error)
    flow.comment = " · ".join(parts)
    if u.source is UsageSource.ESTIMATED or record.error:
        flow.marked = ESTIMATED_MARK
    flow.metadata[METADATA_KEY] = {
        **flow.metadata.get(METADATA_KEY, {}),
        "input_tokens": u.prompt_tokens,
        "output_tokens": u.output_tokens,
        "cost": money(record.cost.total_nanos, record.cost.unit),
        "cost_source": u.source.value,
        "budget_left": budget_left,
        "error": record.error,
    }


def note_denied(flow: http.HTTPFlow, denial: Deny) -> None:
    flow.marked = DENIED_MARK
    flow.comment = f"denied {denial.status} {denial.reason}"
    flow.metadata[METADATA_KEY] = {"request_id": denial.request_id, "deny_reason": denial.reason}


@dataclass
class _Row:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0
    unit: str | None = None
    estimated: int = 0


@dataclass
class Summary:
    """Usage of this mitmproxy session per (key, model), and denials per reason."""

    rows: dict[tuple[str, str], _Row] = field(default_factory=dict)
    denials: Counter[str] = field(default_factory=Counter)

    def add(self, record: UsageRecord) -> None:
        row = self.rows.setdefault((record.key_id or "-", record.model_served or record.model_requested or "-"), _Row())
        row.requests += 1
        row.input_tokens += record.usage.prompt_tokens
        row.output_tokens += record.usage.output_tokens
        row.cost_nanos += record.cost.total_nanos
        row.unit = row.unit or record.cost.unit
        row.estimated += record.usage.source is UsageSource.ESTIMATED

    def deny(self, denial: Deny) -> None:
        self.denials[denial.reason] += 1

    def render(self) -> str:
        allowed = sum(r.requests for r in self.rows.values())
        lines = [f"Quotagate session: {allowed} request(s) metered, {self.denials.total()} denied"]
        table = [["key", "model", "requests", "tokens in", "tokens out", "cost"]]
        for (key, model), r in sorted(self.rows.items()):
            estimated = f" ({r.estimated} estimated)" if r.estimated else ""
            table.append(
                [
                    key,
                    model,
                    f"{r.requests}{estimated}",
                    str(r.input_tokens),
                    str(r.output_tokens),
                    money(r.cost_nanos, r.unit),
                ]
            )
        if len(table) > 1:
            widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
            lines += [
                "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table
            ]
        if self.denials:
            lines.append("  denied: " + ", ".join(f"{reason} x{n}" for reason, n in self.denials.most_common()))
        return "\n".join(lines)
