"""Alerts: thresholds fire once per period across evaluators, deliveries are signed and retried,
firings are on the ledger, and `quotagate alerts test` sends a verifiable sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from quotagate.app import App, open_app
from quotagate.cli.main import main
from quotagate.governance.alert_rules import AlertKind, RuleView, credit_below, percent_crossed, spend_anomaly
from quotagate.governance.alerts import AlertEvaluator
from quotagate.governance.webhooks import sign, verify_signature
from quotagate.ledger.checkpoint import KeyRing
from quotagate.metering.record import CostBreakdown, UsageRecord
from quotagate.settings import load_settings
from quotagate.store.alerts_repo import list_firings
from quotagate.store.ledger_audit import verify_org
from quotagate.store.tables import AlertDelivery, LedgerEntry
from quotagate.store.usage_writer import write_events
from quotagate.usage.model import Usage, UsageSource
from tests.governance.webhook_receiver import Receiver, webhook_receiver
from tests.support.gateway import apply_manifest, edit_manifest, manifest_text

SECRET = "alert-signing-secret-for-tests"
CAP = 10_000_000_000  # demo-key's monthly cap: 10 usd in nanos


@pytest.fixture(autouse=True)
def alert_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QG_TEST_ALERT_SECRET", SECRET)


def with_alerts(url: str, *, fmt: str = "json", thresholds: list[int] | None = None) -> str:
    def edit(doc: dict[str, Any]) -> None:
        receiver: dict[str, Any] = {"name": "hook", "format": fmt, "url": url}
        if fmt == "json":
            receiver["signing_secret"] = "env:QG_TEST_ALERT_SECRET"
        doc["organizations"][0]["alerts"] = {
            "receivers": [receiver],
            "rules": [
                {
                    "rule_id": "key-spend",
                    "kind": "spend_cap",
                    "scope_type": "key",
                    "key_id": "demo-key",
                    "thresholds": thresholds or [50, 80, 100],
                }
            ],
        }

    return edit_manifest(manifest_text(), edit)


@pytest.fixture
def app(use_database: str) -> Iterator[App]:
    a = open_app()
    yield a
    a.close()


def spend(app: App, nanos: int, *, at: float | None = None, tokens: int = 0) -> None:
    record = UsageRecord(
        request_id=uuid.uuid4().hex,
        started_at=time.time() if at is None else at,
        status=200,
        decision="allowed",
        org_id="org-demo",
        project_id="proj-demo",
        client_id="client-demo",
        key_id="demo-key",
        provider="openai",
        model_served="gpt-4o-mini",
        usage=Usage(input_tokens=tokens, source=UsageSource.REPORTED),
        cost=CostBreakdown(total_nanos=nanos, unit="usd"),
    )
    with app.db.transaction() as session:
        write_events(session, [record])


def evaluator(app: App, **kw: Any) -> AlertEvaluator:
    return AlertEvaluator(app.db, load_settings(), interval_s=1, **kw)


def events(receiver: Receiver) -> list[dict[str, Any]]:
    return [orjson.loads(r.body) for r in receiver.requests]


def test_crossing_80_percent_sends_exactly_one_signed_webhook(app: App) -> None:
    with webhook_receiver() as hook:
        apply_manifest(with_alerts(hook.url))
        first, second = evaluator(app), AlertEvaluator(open_app().db, load_settings(), interval_s=1)
        spend(app, CAP * 60 // 100)
        assert first.tick() == (1, 1)
        assert [e["threshold"] for e in events(hook)] == ["50%"]
        spend(app, CAP * 25 // 100)  # 85%
        assert first.tick() == (1, 1)
        for _ in range(3):  # the same process again, and another evaluator: nothing new
            assert first.tick() == (0, 0)
            assert second.tick() == (0, 0)
        assert [e["threshold"] for e in events(hook)] == ["50%", "80%"]
        request = hook.requests[1]
        assert verify_signature(SECRET, request.body, request.headers["x-quotagate-signature"])
        assert not verify_signature("wrong-secret", request.body, request.headers["x-quotagate-signature"])
        assert request.headers["x-quotagate-event"] == "alert"
        event = events(hook)[1]
        assert event["type"] == "quotagate.alert" and event["test"] is False
        assert event["rule"] == {"id": "key-spend", "kind": "spend_cap"}
        assert event["scope"] == {"type": "key", "id": "demo-key", "name": "demo-key"}
        assert event["observed"]["used"] == CAP * 85 // 100 and event["observed"]["limit"] == CAP
        assert event["period"] == time.strftime("%Y-%m", time.gmtime())
        assert "reached 80% of its monthly spend cap" in event["message"]


def test_firings_are_on_the_ledger(app: App) -> None:
    with webhook_receiver() as hook:
        apply_manifest(with_alerts(hook.url))
        spend(app, CAP)  # straight to 100%: one alert, 50% and 80% superseded
        assert evaluator(app).tick() == (1, 1)
        assert [e["threshold"] for e in events(hook)] == ["100%"]
        with app.db.read() as session:
            [entry] = session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "alert"))
            body = json.loads(entry.body)
            assert body["data"]["threshold"] == "100%" and body["data"]["superseded"] == ["50%", "80%"]
            assert entry.amount_nanos == 0
            assert verify_org(session, "org-demo", KeyRing([])).ok
            firings = list_firings(session, "org-demo")
        assert sorted((f["threshold"], f["delivered"]) for f in firings) == [
            ("100%", True),
            ("50%", False),
            ("80%", False),
        ]


def test_a_failing_receiver_is_retried_with_backoff(app: App) -> None:
    with webhook_receiver(statuses=[500, 503]) as hook:
        apply_manifest(with_alerts(hook.url, thresholds=[80]))
        ev = evaluator(app, retry_base_s=0.2)
        spend(app, CAP * 90 // 100)
        assert ev.tick() == (1, 0)  # recorded; the first attempt got a 500
        assert ev.deliver_due() == 0  # not due yet: backoff
        deadline = time.monotonic() + 10
        while len(hook.requests) < 3 and time.monotonic() < deadline:
            ev.deliver_due()
            time.sleep(0.05)
        assert len({r.headers["x-quotagate-delivery"] for r in hook.requests}) == 1  # retries of one delivery
        assert len(hook.requests) == 3
        assert all(verify_signature(SECRET, r.body, r.headers["x-quotagate-signature"]) for r in hook.requests)
        with app.db.read() as session:
            [delivery] = session.scalars(select(AlertDelivery))
            assert (delivery.status, delivery.attempts) == ("delivered", 3)
        assert ev.tick() == (0, 0)


def test_gives_up_after_max_attempts(app: App) -> None:
    with webhook_receiver(statuses=[500] * 10) as hook:
        apply_manifest(with_alerts(hook.url, thresholds=[80]))
        ev = evaluator(app, retry_base_s=0.01, max_attempts=2)
        spend(app, CAP)
        ev.tick()
        time.sleep(0.05)
        ev.deliver_due()
        with app.db.read() as session:
            [delivery] = session.scalars(select(AlertDelivery))
            assert (delivery.status, delivery.attempts) == ("failed", 2)
            assert delivery.last_error is not None and "HTTP 500" in delivery.last_error
        assert len(hook.requests) == 2


def test_concurrent_evaluators_send_once(app: App) -> None:
    """Two evaluators (own engines, like two processes) racing on the same crossing."""
    with webhook_receiver() as hook:
        apply_manifest(with_alerts(hook.url, thresholds=[80]))
        spend(app, CAP * 90 // 100)
        apps = [open_app(), open_app()]
        barrier = threading.Barrier(2)
        results: list[tuple[int, int]] = []

        def run(a: App) -> None:
            barrier.wait()
            results.append(AlertEvaluator(a.db, load_settings(), interval_s=1).tick())

        threads = [threading.Thread(target=run, args=(a,)) for a in apps]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for a in apps:
            a.close()
        # One firing recorded and one delivery sent, whichever evaluator did which.
        assert (sum(r[0] for r in results), sum(r[1] for r in results)) == (1, 1)
        assert len(hook.requests) == 1


_SCRIPT = """
import sys, time
from quotagate.app import open_app
from quotagate.governance.alerts import AlertEvaluator
app = open_app()
evaluator = AlertEvaluator(app.db, app.settings, interval_s=1)
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
print(*evaluator.tick())
"""


def test_a_second_evaluator_process_does_not_send_again(app: App) -> None:
    with webhook_receiver() as hook:
        apply_manifest(with_alerts(hook.url, thresholds=[80]))
        spend(app, CAP * 90 // 100)
        start = str(time.time() + 3)  # both processes tick at the same instant
        procs = [
            subprocess.Popen([sys.executable, "-c", _SCRIPT, start], stdout=subprocess.PIPE, text=True, env=os.environ)
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=60)[0].split() for p in procs]
        assert all(p.returncode == 0 for p in procs)
        assert [sum(int(o[i]) for o in outputs) for i in (0, 1)] == [1, 1]  # one firing, one delivery
        assert len(hook.requests) == 1


def test_a_receiver_disabled_before_delivery_gets_nothing(app: App) -> None:
    from quotagate.store.alerts_repo import disable_alert_object

    with webhook_receiver() as hook:
        apply_manifest(with_alerts(hook.url, thresholds=[80]))
        spend(app, CAP)
        ev = evaluator(app)
        assert ev.evaluate_once() == 1
        with app.db.transaction() as session:
            disable_alert_object(session, "org-demo", "receiver", "hook", actor="test")
        assert ev.deliver_due() == 0
        with app.db.read() as session:
            [delivery] = session.scalars(select(AlertDelivery))
            assert (delivery.status, delivery.last_error) == ("failed", "receiver disabled")
        assert hook.requests == []


def test_slack_format(app: App) -> None:
    with webhook_receiver() as hook:
        apply_manifest(with_alerts(hook.url, fmt="slack", thresholds=[80]))
        spend(app, CAP * 80 // 100)
        assert evaluator(app).tick() == (1, 1)
        [body] = events(hook)
        assert body["text"].startswith(":rotating_light: Quotagate alert: key demo-key reached 80%")
        assert "x-quotagate-signature" not in hook.requests[0].headers  # no secret configured: unsigned


def test_an_unset_secret_never_sends_unsigned(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    with webhook_receiver() as hook:
        apply_manifest(with_alerts(hook.url, thresholds=[80]))
        monkeypatch.delenv("QG_TEST_ALERT_SECRET")
        spend(app, CAP)
        assert evaluator(app).tick() == (1, 0)
        assert hook.requests == []


def test_tpm_saturation_measures_the_last_minute_window(app: App) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["organizations"][0]["alerts"] = {
            "receivers": [{"name": "hook", "url": hook.url, "signing_secret": "env:QG_TEST_ALERT_SECRET"}],
            "rules": [{"rule_id": "tpm", "kind": "tpm_saturation", "scope_type": "project", "project_id": "proj-demo"}],
        }

    with webhook_receiver() as hook:
        apply_manifest(edit_manifest(manifest_text(), edit))
        minute = time.time() // 60 * 60
        spend(app, 0, at=minute - 30, tokens=1_900_000)  # 95% of proj-demo's 2,000,000 TPM, last minute
        assert evaluator(app, clock=lambda: minute + 5).tick() == (1, 1)
        assert "reached 90% of its tokens-per-minute limit: 1900000 of 2000000" in events(hook)[0]["message"]


USD = 1_000_000_000  # nanos


def with_rule(url: str, rule: dict[str, Any]) -> str:
    def edit(doc: dict[str, Any]) -> None:
        doc["organizations"][0]["alerts"] = {
            "receivers": [{"name": "hook", "url": url, "signing_secret": "env:QG_TEST_ALERT_SECRET"}],
            "rules": [rule],
        }

    return edit_manifest(manifest_text(), edit)


def alert_entries(app: App) -> list[dict[str, Any]]:
    with app.db.read() as session:
        assert verify_org(session, "org-demo", KeyRing([])).ok
        rows = session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "alert").order_by(LedgerEntry.seq))
        return [json.loads(r.body)["data"] for r in rows]


def test_credit_balance_fires_once_per_day_through_the_store(app: App) -> None:
    """Credits loaded on the ledger, spend recorded as usage events: the evaluator reads the balance as the
    counters' seed does, fires when it drops below the threshold, once that day, again the next day."""
    from quotagate.store.credits_repo import add_credit

    rule = {"rule_id": "credits", "kind": "credit_balance", "scope_type": "project", "project_id": "proj-demo"}
    with webhook_receiver() as hook:
        apply_manifest(with_rule(hook.url, {**rule, "below": 5}))
        now = time.time()
        assert evaluator(app, clock=lambda: now).tick() == (0, 0)  # no credits ever loaded: never fires
        with app.db.transaction() as session:
            add_credit(
                session,
                scope_type="project",
                scope_id="proj-demo",
                amount_nanos=10 * USD,
                note="test",
                scope=None,
                actor="test",
            )
        spend(app, 4 * USD, at=now + 1)  # balance 6
        assert evaluator(app, clock=lambda: now + 2).tick() == (0, 0)
        spend(app, 2 * USD + 1, at=now + 3)  # balance 4 usd minus a nano: below 5
        assert evaluator(app, clock=lambda: now + 4).tick() == (1, 1)
        for _ in range(2):  # the same day: nothing new, whichever evaluator looks
            assert evaluator(app, clock=lambda: now + 5).tick() == (0, 0)
        assert evaluator(app, clock=lambda: now + 86_400).tick() == (1, 1)  # the next UTC day, still below
        first, second = events(hook)
        assert first["rule"] == {"id": "credits", "kind": "credit_balance"}
        assert first["observed"] == {"balance_nanos": 4 * USD - 1, "below_nanos": 5 * USD}
        assert first["threshold"] == second["threshold"] == f"below:{5 * USD}"
        assert first["period"] == time.strftime("%Y-%m-%d", time.gmtime(now + 4))
        assert second["period"] == time.strftime("%Y-%m-%d", time.gmtime(now + 86_400))
        assert first["message"] == "project demo-app: prepaid credit balance 4.0000 is below 5.0000"
        for request, sent_at in zip(hook.requests, (now + 4, now + 86_400), strict=True):  # signed at the clock's time
            assert verify_signature(SECRET, request.body, request.headers["x-quotagate-signature"], now=sent_at)
        assert [(e["kind"], e["period"]) for e in alert_entries(app)] == [
            ("credit_balance", first["period"]),
            ("credit_balance", second["period"]),
        ]


def test_spend_anomaly_fires_once_per_hour_through_the_store(app: App) -> None:
    """A week of history at 1 usd an hour; the last hour's spend must exceed 3x that (and 1 usd)."""
    rule = {
        "rule_id": "spike",
        "kind": "spend_anomaly",
        "scope_type": "project",
        "project_id": "proj-demo",
        "factor": 3,
        "window_minutes": 60,
        "baseline_days": 7,
        "min_spend": 1,
    }
    with webhook_receiver() as hook:
        apply_manifest(with_rule(hook.url, rule))
        now = time.time() // 3600 * 3600 + 1800  # mid-hour: the window and the period are unambiguous
        spend(app, 7 * 24 * USD, at=now - 3 * 86_400)  # the baseline: 168 usd over the 7 days before the window
        spend(app, 8 * 24 * USD, at=now - 9 * 86_400)  # older than the baseline: ignored
        spend(app, 3 * USD, at=now - 600)  # exactly 3x the average of 1 usd per hour: not above it
        assert evaluator(app, clock=lambda: now).tick() == (0, 0)
        spend(app, 1, at=now - 300)  # one nano more
        assert evaluator(app, clock=lambda: now).tick() == (1, 1)
        assert evaluator(app, clock=lambda: now + 60).tick() == (0, 0)  # the same hour: once
        # An hour later the window holds only what is new: a new spike, a new period, one more alert.
        spend(app, 4 * USD, at=now + 3000)
        assert evaluator(app, clock=lambda: now + 3600).tick() == (1, 1)
        first, second = events(hook)
        assert first["observed"] == {"recent_nanos": 3 * USD + 1, "average_nanos": USD, "factor": "3"}
        assert second["observed"]["recent_nanos"] == 4 * USD
        assert first["period"] == time.strftime("%Y-%m-%dT%H", time.gmtime(now))
        assert second["period"] == time.strftime("%Y-%m-%dT%H", time.gmtime(now + 3600))
        assert [e["threshold"] for e in alert_entries(app)] == ["anomaly", "anomaly"]


# -- the signature, the sample and the rule arithmetic ---------------------------------------------


def test_signature_is_replay_safe() -> None:
    body = b'{"type":"quotagate.alert"}'
    now = 1_767_225_600
    header = sign(SECRET, body, now)
    assert verify_signature(SECRET, body, header, now=now + 299)
    assert not verify_signature(SECRET, body, header, now=now + 301)  # an old delivery replayed
    assert not verify_signature(SECRET, body + b" ", header, now=now)  # body altered
    assert not verify_signature(SECRET, body, header.replace(f"t={now}", f"t={now + 1}"), now=now)  # re-dated
    assert not verify_signature(SECRET, body, "v1=deadbeef", now=now)


def test_cli_alerts_test_to_a_url(capsys: pytest.CaptureFixture[str], use_database: str) -> None:
    with webhook_receiver() as hook:
        assert main(["alerts", "test", "--url", hook.url]) == 0
        out = capsys.readouterr().out
        secret = out.split("signing with a one-off secret: ", 1)[1].split()[0]
        [request] = hook.requests
        assert verify_signature(secret, request.body, request.headers["x-quotagate-signature"])
        assert orjson.loads(request.body)["test"] is True


def test_cli_alerts_test_to_the_configured_receivers(capsys: pytest.CaptureFixture[str], app: App) -> None:
    with webhook_receiver(statuses=[200]) as hook:
        apply_manifest(with_alerts(hook.url))
        assert main(["alerts", "test", "--org", "demo"]) == 0
        assert "demo/hook: delivered" in capsys.readouterr().out
        [request] = hook.requests
        assert verify_signature(SECRET, request.body, request.headers["x-quotagate-signature"])
    assert main(["alerts", "test", "--url", "http://127.0.0.1:9/closed"]) == 1


def test_anomaly_rule() -> None:
    params = {"factor": "3", "window_minutes": 60, "baseline_days": 7, "min_spend_nanos": 1_000_000_000}
    rule = RuleView("o:r", "o", "r", AlertKind.SPEND_ANOMALY, "project", "p", params, ())
    week = 7 * 24 * 10_000_000_000  # 10 usd per hour for a week
    assert spend_anomaly(rule, "p", 30_000_000_000, week, 0) == []  # exactly 3x: not above
    [fired] = spend_anomaly(rule, "p", 30_000_000_001, week, 0)
    assert fired.observed["average_nanos"] == 10_000_000_000
    assert spend_anomaly(rule, "p", 999_999_999, 0, 0) == []  # below min_spend, even with no history
    assert len(spend_anomaly(rule, "p", 1_000_000_000, 0, 0)) == 1


def test_credit_rule() -> None:
    rule = RuleView("o:r", "o", "r", AlertKind.CREDIT_BALANCE, "project", "p", {"below_nanos": 5}, ())
    assert credit_below(rule, "p", 4, True, 0)[0].threshold == "below:5"
    assert credit_below(rule, "p", 5, True, 0) == []
    assert credit_below(rule, "p", 0, False, 0) == []  # a scope that never had credits


def test_percent_rule_ranks() -> None:
    from quotagate.governance.alert_rules import LimitFigure

    rule = RuleView("o:r", "o", "r", AlertKind.SPEND_CAP, "key", "k", {"thresholds": [50, 80, 100]}, ())
    crossed = percent_crossed(rule, "k", [LimitFigure("q", 81, 100, "usd")], "2026-11", tokens=False)
    assert [(c.threshold, c.rank) for c in crossed] == [("50%", 50), ("80%", 80)]


def test_admin_api_store_functions(app: App) -> None:
    """Receivers and rules put through the store functions (what the admin API calls) fire like manifest ones
    and survive a manifest apply (`managed_by="api"`)."""
    from quotagate.errors import ConfigError, NotFoundError
    from quotagate.manifest.schema import AlertReceiver as ReceiverSpec
    from quotagate.manifest.schema import AlertRule as RuleSpec
    from quotagate.store.alerts_repo import list_rules, put_receiver, put_rule

    with webhook_receiver() as hook:
        apply_manifest(manifest_text())
        receiver = ReceiverSpec(name="api-hook", url=hook.url, signing_secret="env:QG_TEST_ALERT_SECRET")
        rule = RuleSpec.model_validate(
            {"rule_id": "api-spend", "kind": "spend_cap", "scope_type": "key", "key_id": "demo-key", "thresholds": [80]}
        )
        with app.db.transaction() as session:
            put_receiver(session, "org-demo", receiver, actor="admin:test")
            assert put_rule(session, "org-demo", rule, actor="admin:test")["managed_by"] == "api"
        with pytest.raises(ConfigError, match="unknown receiver"), app.db.transaction() as session:
            put_rule(session, "org-demo", rule.model_copy(update={"receivers": ["nope"]}), actor="admin:test")
        with pytest.raises(NotFoundError, match="no key 'ghost'"), app.db.transaction() as session:
            put_rule(session, "org-demo", rule.model_copy(update={"key_id": "ghost"}), actor="admin:test")
        apply_manifest(manifest_text())  # the manifest does not know them: api rows stay active
        with app.db.read() as session:
            assert [(r["rule_id"], r["status"]) for r in list_rules(session, "org-demo")] == [("api-spend", "active")]
        spend(app, CAP)
        assert evaluator(app).tick() == (1, 1)
        assert verify_signature(SECRET, hook.requests[0].body, hook.requests[0].headers["x-quotagate-signature"])
