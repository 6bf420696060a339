"""Signed actor attribution over HTTP: usage reports grouped by team and user (JSON and CSV), the dashboard's
breakdowns by team, user and app, and the actor on each recent request, for admins and for the key itself."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest

from quotagate.gateway.outcome import Allow
from quotagate.governance.actors import sign_actor
from tests.http.conftest import (
    Api,
    admin_token,
    apply,
    bearer,
    call_gateway,
    issue_key_credential,
    stored,
    two_org_manifest,
)
from tests.support.gateway import edit_manifest

SECRET = "workspace-signing-secret-for-http-tests"
ALICE = {"user": "alice", "team": "ml", "app": "notebook"}
BOB = {"user": "bob", "team": "ml"}
CAROL = {"user": "carol", "team": "web", "app": "support-bot"}


@pytest.fixture(autouse=True)
def actor_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QG_TEST_ACTOR_SECRET", SECRET)


def with_actors(doc: dict[str, Any]) -> None:
    doc["organizations"][0]["projects"][0]["actors"] = {
        "policy": "optional",
        "signing_secret": "env:QG_TEST_ACTOR_SECRET",
    }


async def attributed_traffic(api: Api) -> str:
    """alice twice, bob once, carol once, and one unattributed request, on demo-key; returns its credential."""
    apply(edit_manifest(two_org_manifest(), with_actors))
    await api.runtime.config.refresh()
    credential = await issue_key_credential(api)
    for fields, usage in ((ALICE, (100, 10)), (ALICE, (200, 20)), (BOB, (300, 30)), (CAROL, (400, 40)), (None, (5, 5))):
        headers = sign_actor(SECRET, "demo-key", fields, int(time.time())) if fields else None
        assert isinstance(await call_gateway(api.runtime, credential, usage=usage, headers=headers), Allow)
    stored(api.runtime)
    return credential


async def test_usage_grouped_by_team_and_user(api_db: Api) -> None:
    await attributed_traffic(api_db)
    report = (await api_db.get("/admin/usage", params={"group_by": "actor_team,actor_user"})).json()
    assert report["group_by"] == ["actor_team", "actor_user"]
    assert [(r["actor_team"], r["actor_user"], r["requests"], r["input_tokens"]) for r in report["rows"]] == [
        ("-", "-", 1, 5),  # not attributed
        ("ml", "alice", 2, 300),
        ("ml", "bob", 1, 300),
        ("web", "carol", 1, 400),
    ]
    assert report["totals"]["cost_nanos"] == sum(r["cost_nanos"] for r in report["rows"]) > 0
    by_app = (await api_db.get("/admin/usage", params={"group_by": "actor_app", "organization": "demo"})).json()
    assert {r["actor_app"]: r["requests"] for r in by_app["rows"]} == {"-": 2, "notebook": 2, "support-bot": 1}

    text = (await api_db.get("/admin/usage", params={"group_by": "actor_team,actor_user", "format": "csv"})).text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["actor_team", "actor_user", "requests"]
    assert [r[:3] for r in rows[1:-1]] == [
        ["-", "-", "1"],
        ["ml", "alice", "2"],
        ["ml", "bob", "1"],
        ["web", "carol", "1"],
    ]
    assert rows[-1][0] == "TOTAL" and int(rows[-1][-2]) == report["totals"]["cost_nanos"]
    # Another organization's admin sees none of it.
    other = (await api_db.get("/admin/usage", admin_token("other"), params={"group_by": "actor_user"})).json()
    assert other["rows"] == []


async def test_activity_breakdowns_and_requests_carry_the_actor(api: Api) -> None:
    credential = await attributed_traffic(api)
    summary = (await api.get("/admin/activity/summary", admin_token("demo"))).json()
    teams = [(r["id"], r["requests"]) for r in summary["by_actor_team"]]
    assert sorted(teams) == [("ml", 3), ("web", 1)]
    assert sorted((r["id"], r["requests"]) for r in summary["by_actor_user"]) == [
        ("alice", 2),
        ("bob", 1),
        ("carol", 1),
    ]
    assert sorted((r["id"], r["requests"]) for r in summary["by_actor_app"]) == [("notebook", 2), ("support-bot", 1)]
    # Spend per team is the sum of its requests' costs, to the nano.
    requests = (await api.get("/admin/activity/requests", admin_token("demo"))).json()["data"]
    ml = sum(r["cost_nanos"] for r in requests if (r["actor"] or {}).get("team") == "ml")
    assert next(r["cost_nanos"] for r in summary["by_actor_team"] if r["id"] == "ml") == ml > 0
    assert [r["actor"] for r in requests] == [None, CAROL, BOB, ALICE, ALICE]  # newest first

    own = (await api.http.get("/api/activity/requests", headers=bearer(credential))).json()["data"]
    assert [r["actor"] for r in own] == [None, CAROL, BOB, ALICE, ALICE]
    mine = (await api.http.get("/api/activity/summary", headers=bearer(credential))).json()
    assert sorted(r["id"] for r in mine["by_actor_user"]) == ["alice", "bob", "carol"]
    # An organization without attributed usage has empty actor breakdowns (the dashboard hides the panel).
    other = (await api.get("/admin/activity/summary", admin_token("other"))).json()
    assert other["by_actor_team"] == other["by_actor_user"] == other["by_actor_app"] == []
