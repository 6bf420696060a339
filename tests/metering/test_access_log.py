"""The access log: one bare JSON object per line, with seed 003's log_format fields, on a stream of its own."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from quotagate.metering.access_log import AccessLogSink, configure_access_log
from quotagate.metering.record import CostBreakdown, UsageRecord
from quotagate.usage.model import Usage, UsageSource
from tests.metering.test_meter import ListSink
from tests.support.gateway import SEED_LOG_FIELDS

SEED_FIELDS = list(SEED_LOG_FIELDS)
EXTRA_FIELDS = ["request_id", "deny_reason", "tokens_in", "tokens_out"]

EVENT = UsageRecord(
    request_id="req-42",
    started_at=1_800_000_000.0,
    finished_at=1_800_000_001.25,
    latency_ms=1250,
    status=200,
    decision="allowed",
    org_id="acme",
    project_id="team-ai",
    client_id="client-1",
    key_id="da-sk-acme-team",
    provider="openai",
    model_requested="gpt-5.4-mini",
    model_served="gpt-5.4-mini-2026",
    usage=Usage(input_tokens=1000, cached_input_tokens=200, output_tokens=50, source=UsageSource.REPORTED),
    cost=CostBreakdown(Decimal("0.00075"), Decimal("0.000015"), Decimal(0), Decimal("0.000225"), 990_000, "usd", "v"),
    remaining_requests=259,
    remaining_tokens=118_000,
)


@pytest.fixture
def access_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("quotagate.access")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    root_level = logging.getLogger().level
    yield logger
    logging.getLogger().setLevel(root_level)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        logger.addHandler(handler)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_each_line_is_one_bare_json_object_with_the_seed_fields(tmp_path: Path, access_logger: logging.Logger) -> None:
    path = tmp_path / "logs" / "access.jsonl"
    configure_access_log(path)
    logging.getLogger().setLevel(logging.ERROR)  # the process's own level does not silence the access log
    inner = ListSink()
    sink = AccessLogSink(inner)
    sink.record(EVENT)
    sink.record(UsageRecord("req-43", 1_800_000_002.0, 429, "denied", org_id="acme", deny_reason="rate_limit_rpm"))
    logging.getLogger("quotagate.other").error("an ordinary log line")  # stays out of the access log
    raw = path.read_text()
    lines = raw.splitlines()
    assert raw.endswith("\n") and len(lines) == 2
    first = orjson.loads(lines[0])
    assert list(first) == [*SEED_FIELDS[:1], "request_id", *SEED_FIELDS[1:], *EXTRA_FIELDS[1:]]
    assert first == {
        "time": "2027-01-15T08:00:01.250+00:00",  # when the request ended, like $time_iso8601
        "request_id": "req-42",
        "org": "acme",
        "project": "team-ai",
        "client": "client-1",
        "gateway_key_id": "da-sk-acme-team",
        "provider": "openai",
        "model": "gpt-5.4-mini-2026",
        "rate_limit_reason": "",
        "request_remaining": "259",
        "token_remaining": "118000",
        "input_cost": "0.000765",
        "output_cost": "0.000225",
        "total_cost": "0.000990000",
        "cost_status": "reported",
        "status": "200",
        "request_time": "1.250",
        "deny_reason": "",
        "tokens_in": 1200,
        "tokens_out": 50,
    }
    denied = orjson.loads(lines[1])
    assert (denied["status"], denied["cost_status"], denied["rate_limit_reason"]) == ("429", "denied", "rate_limit_rpm")
    assert denied["total_cost"] == "0.000000000" and denied["time"] == "2027-01-15T08:00:02.000+00:00"
    assert inner.events[0] is EVENT and len(inner.events) == 2  # the line never replaces the event


def test_without_a_file_the_bare_lines_go_to_standard_error(
    capsys: pytest.CaptureFixture[str], access_logger: logging.Logger
) -> None:
    configure_access_log()
    AccessLogSink(ListSink()).record(EVENT)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith('{"time":"2027-') and line.endswith("}")
    assert orjson.loads(line)["request_id"] == "req-42"
