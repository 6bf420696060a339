"""The dashboard in a real headless Chromium (Debian's, driven by Playwright; `scripts/test-prereqs` installs it).

One gateway (runtime + HTTP API in a thread) and one browser per module. Usage is seeded by sending requests
through the gateway core (Check, then the provider's answer metered), as Envoy's filters would; a change made
on the page is proved by the next request through the core. Every view is saved as a screenshot under
`artifacts/dashboard/`.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from quotagate.gateway.outcome import Allow, Outcome
from quotagate.governance.actors import sign_actor
from quotagate.settings import load_settings
from quotagate.store.admin_tokens_repo import issue_admin_token, revoke_admin_token
from quotagate.store.tables import UsageEvent
from tests.dashboard.browser import fits_sideways, launched, new_page, prerequisites, shot, sign_in
from tests.http.conftest import OTHER_ORG, admin_token, apply, bearer, call_gateway, denial, stored
from tests.http.threaded import Served, serving_in_thread
from tests.support.gateway import edit_manifest, issue_key, manifest_text

pytestmark = pytest.mark.browser

LAPTOP = {"width": 1366, "height": 768}
# gpt-4o-mini: $0.60 per 1M output tokens, so 20,000 reserved output tokens cost 1.2 cents (over a 1-cent cap).
BIG = 20_000
ACTOR_SECRET = "research-workspace-signing-secret"
CAP_HINT = "Enter the monthly cap in whole cents"

PROJECTS = [
    {
        "project_id": "proj-research",
        "project_slug": "research",
        "project_name": "Research",
        # Requests of this project may carry a signed actor (user, team, app).
        "actors": {"policy": "optional", "signing_secret": "env:QG_TEST_ACTOR_SECRET"},
        "clients": [
            {"client_id": "client-research", "client_name": "Research team", "api_keys": [{"key_id": "research-key"}]}
        ],
    },
    {
        "project_id": "proj-support",
        "project_slug": "support-bot",
        "project_name": "Support bot",
        "clients": [
            {"client_id": "client-support", "client_name": "Support bot", "api_keys": [{"key_id": "support-key"}]}
        ],
    },
]


def manifest() -> str:
    def edit(doc: dict[str, Any]) -> None:
        doc["organizations"][0]["projects"].extend(PROJECTS)
        doc["organizations"].append(OTHER_ORG)

    return edit_manifest(manifest_text(), edit)


@dataclass
class Gateway:
    served: Served
    url: str
    org_admin: str  # an admin token of organization `demo`
    keys: dict[str, str]  # key id -> credential
    sub_accounts: dict[str, dict[str, Any]]  # name -> the API's answer (with its key)

    def send(self, credential: str, **kw: Any) -> Outcome:
        """One request through the gateway core, metered and stored."""
        assert self.served.runtime is not None
        outcome: Outcome = self.served.call(call_gateway(self.served.runtime, credential, **kw))
        stored(self.served.runtime)
        return outcome

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> httpx.Response:
        headers = bearer(token or self.org_admin)
        return httpx.request(method, self.url + path, json=body, headers=headers, timeout=30)

    def admin_token(self, organization: str | None) -> str:
        """A new admin token in the gateway's own store (the test's home is another one)."""
        assert self.served.runtime is not None
        app = self.served.runtime.app
        with app.db.transaction(immediate=True) as session:
            _, credential = issue_admin_token(session, app.hasher, organization=organization, name=None, actor="test")
        return str(credential)


def signed(key_id: str, **actor: str) -> dict[str, str]:
    """The headers of a verified actor for requests of `key_id` (what a client library sends)."""
    return sign_actor(ACTOR_SECRET, key_id, actor, int(datetime.now(UTC).timestamp()))


def _seed(gw: Gateway) -> None:
    """A day of traffic: three keys and two sub-accounts on three models, some refused, spread over the last 22
    hours (not before this month, whose spend the caps count) so the charts have a shape."""
    rng = random.Random(8)
    plan = [
        ("demo-key", "gpt-5.4", (120_000, 30_000), 4),
        ("demo-key", "gpt-4o-mini", (40_000, 8_000), 9),
        ("research-key", "gpt-5.4", (200_000, 50_000), 3),
        ("research-key", "gpt-5.4-mini", (60_000, 9_000), 5),
        ("support-key", "gpt-5.4-mini", (30_000, 6_000), 14),
        ("acme-corp", "gpt-5.4", (150_000, 40_000), 8),
    ]
    for name, model, (prompt, completion), n in plan:
        credential = gw.keys.get(name) or gw.sub_accounts[name]["key"]
        for _ in range(n):
            usage = (int(prompt * rng.uniform(0.3, 1.0)), int(completion * rng.uniform(0.3, 1.0)))
            assert isinstance(gw.send(credential, model=model, usage=usage), Allow)
    # globex: three requests of $1.50 each, 90% of its $5 cap; a fourth's worst case no longer fits.
    globex = gw.sub_accounts["globex"]["key"]
    for _ in range(3):
        assert isinstance(gw.send(globex, model="gpt-5.4", usage=(300_000, 50_000)), Allow)
    assert (
        denial(gw.send(globex, model="gpt-5.4", max_tokens=90_000, usage=None))["error"]["code"] == "insufficient_quota"
    )
    for model in ("gpt-6", "gpt-6", "o9-preview"):
        assert denial(gw.send(gw.keys["demo-key"], model=model, usage=None))["error"]["code"] == "model_not_found"
    # Research's notebooks sign who sent each request: its spend splits by team, user and app.
    for actor, n in (
        ({"user": "alice", "team": "ml", "app": "notebook"}, 3),
        ({"user": "bob", "team": "ml", "app": "notebook"}, 2),
        ({"user": "carol", "team": "search", "app": "eval"}, 2),
    ):
        for _ in range(n):
            headers = signed("research-key", **actor)
            assert isinstance(
                gw.send(gw.keys["research-key"], model="gpt-5.4-mini", usage=(50_000, 8_000), headers=headers), Allow
            )
    assert gw.served.runtime is not None
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with gw.served.runtime.app.db.transaction() as session:
        for (request_id,) in session.query(UsageEvent.request_id).all():
            when = max(now - timedelta(minutes=rng.uniform(5, 22 * 60)), month_start)
            session.execute(
                update(UsageEvent).where(UsageEvent.request_id == request_id).values(started_at=when, finished_at=when)
            )


# The gateway reads provider keys and the actor signing secret from the environment at use.
GATEWAY_ENV = {
    "QUOTAGATE_DEMO_OPENAI_KEY": "sk-provider-openai",
    "QUOTAGATE_DEMO_ANTHROPIC_KEY": "sk-provider-anthropic",
    "QG_TEST_ACTOR_SECRET": ACTOR_SECRET,
}


@pytest.fixture(autouse=True)
def gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with a clean environment (tests/conftest.py): give the running gateway its own back."""
    for name, value in GATEWAY_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    prerequisites()
    home = tmp_path_factory.mktemp("dashboard") / "qghome"
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("QUOTAGATE_") and not name.startswith("QUOTAGATE_TEST_"):
                mp.delenv(name)
        mp.setenv("QUOTAGATE_HOME", str(home))
        for name, value in GATEWAY_ENV.items():
            mp.setenv(name, value)
        apply(manifest())
        keys = {k: issue_key(k) for k in ("demo-key", "research-key", "support-key", "other-key")}
        org_admin = admin_token("demo")
        with serving_in_thread(load_settings()) as served:
            gw = Gateway(served, served.url, org_admin, keys, {})
            for name, cap, rpm in (("acme-corp", 2500, 300), ("globex", 500, None)):
                body = {"name": name, "spend_cap_cents": cap, "rate_limit_rpm": rpm, "default_tag": name}
                r = gw.api("POST", "/v1/sub-accounts", {k: v for k, v in body.items() if v is not None})
                assert r.status_code == 201, r.text
                gw.sub_accounts[name] = r.json()
            _seed(gw)
            # Prepaid credits for the support bot, loaded after the seeded traffic.
            credit = gw.api(
                "POST", "/admin/credits", {"scope_type": "project", "scope_id": "proj-support", "amount": "50"}
            )
            assert credit.status_code == 201, credit.text
            yield gw


@pytest.fixture(scope="module")
def browser(gateway: Gateway) -> Iterator[Any]:
    with launched() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with new_page(browser) as page:
        yield page


def kpi_value(page: Any, label: str, part: str = "value") -> Any:
    """The figure (or, with part="sub", the line under it) of the KPI card labelled `label`."""
    card = page.locator(".kpi", has=page.locator(".kpi-label", has_text=re.compile(f"^{label}$", re.IGNORECASE)))
    return card.locator(f".kpi-{part}")


def kpi(page: Any, label: str, part: str = "value") -> str:
    text: str = kpi_value(page, label, part).inner_text()
    return text


def test_admin_overview_shows_the_seeded_usage_and_new_requests_live(gateway: Gateway, page: Any) -> None:
    from playwright.sync_api import expect

    sign_in(page, gateway.url, gateway.org_admin)
    page.wait_for_selector("table.requests tbody tr")
    summary = gateway.api("GET", "/admin/activity/summary").json()["totals"]
    assert kpi(page, "Requests") == str(summary["requests"])
    assert kpi(page, "Requests", "sub") == "4 blocked"
    assert kpi(page, "Spend") == f"${float(summary['cost']):,.2f}"
    assert page.locator("h1").inner_text() == "Demo Org"
    assert "org admin" in page.locator(".who").inner_text()

    # Charts: a bar per busy hour, the spend split by model, project and client, caps as gauges.
    assert page.locator(".chart svg rect.bar").count() > 5
    models = page.locator("section", has=page.locator("h2", has_text="Spend by model")).locator(".bar-label")
    assert set(models.all_inner_texts()) == {"gpt-5.4", "gpt-4o-mini", "gpt-5.4-mini"}
    projects = page.locator(".legend-label").all_inner_texts()
    assert {"Demo app", "Research", "Support bot", "Sub-accounts"} <= set(projects)
    gauges = page.locator(".gauge-title").all_inner_texts()
    assert gauges[0] == "Organization · demo" and "Client · globex" in gauges and "Key · demo-key" in gauges
    globex = page.locator(".gauge", has=page.locator(".gauge-title", has_text="globex"))
    assert globex.get_attribute("data-level") == "danger"
    blocked = page.locator("section", has=page.locator("h2", has_text="Blocked requests")).locator(".bar-label")
    assert blocked.all_inner_texts() == ["model not found", "insufficient quota"]
    top = page.locator("section", has=page.locator("h2", has_text="Top spenders")).locator("tbody tr")
    assert top.count() == 5
    page.click("button[role=tab]:has-text('Spend')")
    assert page.locator(".chart path.line").count() == 1
    page.click("button[role=tab]:has-text('Tokens')")
    assert page.locator(".chart svg rect.bar.s1").count() > 5 and page.locator(".chart svg rect.bar.s2").count() > 5
    page.click("button[role=tab]:has-text('Requests')")

    # Credits: loaded to the support bot's project, shown with what is left of them.
    balance = gateway.api("GET", "/admin/activity/balance").json()
    [credits] = balance["credits"]
    assert (credits["scope_id"], credits["loaded"]["amount"]) == ("proj-support", "50")
    assert kpi(page, "Credits left") == f"${float(credits['balance']['amount']):,.2f}"
    assert kpi(page, "Credits left", "sub") == "of $50.00 loaded"

    # Signed actor attribution: the research team's spend by team, user and app.
    actors = page.locator("section.actors")
    by_actor = actors.locator(".bar-label")
    assert set(by_actor.all_inner_texts()) == {"ml", "search"}
    summary_now = gateway.api("GET", "/admin/activity/summary").json()
    ml = next(r for r in summary_now["by_actor_team"] if r["id"] == "ml")
    assert ml["requests"] == 5
    assert actors.locator(".bar-row", has_text="ml").locator(".bar-value").inner_text() == f"${float(ml['cost']):,.2f}"
    actors.locator("button[role=tab]:has-text('User')").click()
    assert set(by_actor.all_inner_texts()) == {"alice", "bob", "carol"}
    actors.locator("button[role=tab]:has-text('App')").click()
    assert set(by_actor.all_inner_texts()) == {"notebook", "eval"}
    actors.locator("button[role=tab]:has-text('Team')").click()
    shot(page, "overview-admin")

    # Live: a request through the gateway appears without a reload, and the figures follow.
    outcome = gateway.send(gateway.keys["support-key"], model="gpt-5.4-mini", usage=(321, 123))
    assert isinstance(outcome, Allow), outcome
    row = page.locator(f"tr[data-request-id='{outcome.ticket.request_id}']")
    row.wait_for(timeout=8_000)
    assert "321 → 123" in row.inner_text() and "support-key" in row.inner_text()
    more = str(summary["requests"] + 1)
    expect(kpi_value(page, "Requests")).to_have_text(more)
    # An attributed request shows who sent it.
    headers = signed("research-key", user="dave", team="ops", app="cli")
    outcome = gateway.send(gateway.keys["research-key"], model="gpt-5.4-mini", usage=(10, 5), headers=headers)
    assert isinstance(outcome, Allow), outcome
    row = page.locator(f"tr[data-request-id='{outcome.ticket.request_id}']")
    row.wait_for(timeout=8_000)
    assert page.locator("table.requests th", has_text="Actor").count() == 1
    actor = row.locator("td.actor")
    assert actor.get_attribute("title") == "app=cli;team=ops;user=dave"
    assert actor.inner_text().split("\n") == ["dave", "team ops · app cli"]
    unattributed = page.locator("table.requests tbody tr").nth(1)
    assert "support-key" in unattributed.inner_text() and unattributed.locator("td.actor").count() == 0
    more = str(summary["requests"] + 2)
    expect(kpi_value(page, "Requests")).to_have_text(more)

    # Hourly windows beyond a month are not offered; 30 days daily still shows the same requests.
    page.click(".segmented button:has-text('90 days')")
    assert page.locator(".segmented button:has-text('Hourly')").is_disabled()
    page.click(".segmented button:has-text('30 days')")
    page.wait_for_selector("h2:has-text('Activity per day')")
    assert kpi(page, "Requests") == more

    # A laptop screen: nothing overflows sideways.
    page.set_viewport_size(LAPTOP)
    page.wait_for_timeout(200)
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    shot(page, "overview-admin-laptop")


def test_a_shared_link_signs_in_a_gateway_key_without_sending_it_in_a_url(gateway: Gateway, page: Any) -> None:
    credential = gateway.keys["demo-key"]
    seen: list[Any] = []
    page.on("request", lambda request: seen.append(request))
    page.goto(f"{gateway.url}/dashboard#token={credential}")
    page.wait_for_selector("table.requests tbody tr")
    assert page.url == f"{gateway.url}/dashboard#/overview"
    assert page.evaluate("JSON.parse(sessionStorage.getItem('quotagate.dashboard')).token") == credential
    assert page.evaluate("localStorage.length") == 0
    secret = credential.split(".", 1)[1]
    assert all(secret not in r.url for r in seen)
    api_calls = [r for r in seen if "/api/" in r.url]
    assert api_calls and all(r.headers.get("authorization") == f"Bearer {credential}" for r in api_calls)

    assert page.locator("h1").inner_text() == "Key demo-key"
    assert page.locator("nav a").all_inner_texts() == ["Overview"]
    assert kpi(page, "Requests") == "13"
    balance = gateway.api("GET", "/admin/activity/balance").json()
    key_cap = next(limit for limit in balance["limits"] if limit["scope_id"] == "demo-key")
    assert kpi(page, "Balance") == f"${float(key_cap['spend_remaining']['amount']):,.2f}"
    titles = page.locator(".gauge-title").all_inner_texts()
    assert titles[0] == "Organization · demo" and "Key · demo-key" in titles
    requests = page.locator("table.requests tbody tr")
    assert {t.split("\t")[1] for t in requests.all_inner_texts()} == {"demo-key"}
    assert page.locator("h2", has_text="Spend by project").count() == 0
    shot(page, "overview-key")

    page.reload()  # the session survives a reload of the tab
    page.wait_for_selector("h1:has-text('Key demo-key')")
    page.click("#sign-out")
    page.wait_for_selector("#token")
    assert page.evaluate("sessionStorage.getItem('quotagate.dashboard')") is None


def test_sign_in_errors_and_empty_states_read_well(gateway: Gateway, page: Any) -> None:
    page.goto(gateway.url + "/dashboard")
    page.wait_for_selector("#token")
    assert page.locator("label[for=token]").inner_text() == "Admin token or gateway key"
    assert page.locator(".form-error").inner_text() == ""
    shot(page, "login")
    sign_in(page, gateway.url, "qga-0000000000000000.not-a-secret")
    page.wait_for_selector(".form-error:has-text('neither a valid admin token nor a valid gateway key')")
    shot(page, "login-error")
    suspended = gateway.api("POST", "/admin/keys/research-key/suspend")
    assert suspended.status_code == 200, suspended.text
    page.fill("#token", gateway.keys["research-key"])
    page.click("button[type=submit]")
    page.wait_for_selector(".form-error:has-text('key suspended')")
    assert gateway.api("POST", "/admin/keys/research-key/resume").status_code == 200

    # A global admin picks the organization; one without traffic reads as empty, not broken.
    page.fill("#token", gateway.admin_token(None))
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Demo Org')")
    assert "global admin" in page.locator(".who").inner_text()
    page.select_option("#org-picker select", "org-other")
    page.wait_for_selector("h1:has-text('Other Org')")
    page.wait_for_selector("text=No requests in the last 24 hours.")
    assert page.locator("text=No spend caps are set.").count() == 1
    assert page.locator("text=Nothing blocked.").count() == 1
    page.wait_for_selector("text=No requests yet.")
    shot(page, "overview-empty")


def test_issue_and_revoke_a_key_from_the_keys_page(gateway: Gateway, page: Any) -> None:
    from playwright.sync_api import expect

    sign_in(page, gateway.url, gateway.org_admin)
    page.click("nav a:has-text('Keys')")
    row = page.locator("tr[data-key-id='demo-key']")
    row.wait_for()
    assert "active" in row.inner_text() and re.search(r"\d+ (s|min|h) ago", row.inner_text())
    assert "$" in row.locator("td.num").nth(1).inner_text()

    page.click("button:has-text('New key')")
    page.select_option("#new-key-client", "client-research")
    page.fill("#new-key-id", "dashboard-made")
    page.click(".modal button:has-text('Create key')")
    secret = page.locator(".modal input.secret")
    secret.wait_for()
    credential = secret.input_value()
    assert credential.startswith("dashboard-made.") and len(credential) > 40
    page.click(".modal button:has-text('Copy')")
    page.wait_for_selector(".modal button:has-text('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == credential
    shot(page, "keys-secret-shown-once")
    page.click(".modal button:has-text('Done')")
    assert page.locator("input.secret").count() == 0
    assert credential not in page.content()  # shown once: gone with the dialog

    assert isinstance(gateway.send(credential, model="gpt-4o-mini", usage=(10, 5)), Allow)
    made = page.locator("tr[data-key-id='dashboard-made']")
    made.wait_for()
    expect(made).to_contain_text(re.compile(r"\d+ s ago"), timeout=8_000)
    shot(page, "keys")

    # Suspend and resume from the page: the next request through the gateway follows each click.
    support = page.locator("tr[data-key-id='support-key']")
    support.locator("button:has-text('Suspend')").click()
    page.wait_for_selector("tr[data-key-id='support-key'] .badge:has-text('suspended')")
    page.wait_for_selector(".toast:has-text('support-key suspended')")
    assert denial(gateway.send(gateway.keys["support-key"], usage=None))["error"]["code"] == "key_suspended"
    support.locator("button:has-text('Resume')").click()
    page.wait_for_selector("tr[data-key-id='support-key'] .badge:has-text('active')")
    assert support.locator("button:has-text('Suspend')").count() == 1
    assert isinstance(gateway.send(gateway.keys["support-key"], usage=None), Allow)

    # A laptop screen: the key table, its actions included, fits without scrolling sideways.
    page.set_viewport_size(LAPTOP)
    fits_sideways(page)
    shot(page, "keys-laptop")
    page.set_viewport_size({"width": 1440, "height": 900})

    made.locator("button:has-text('Revoke')").click()
    page.click(".modal button:has-text('Revoke key')")
    page.wait_for_selector("tr[data-key-id='dashboard-made'] .badge:has-text('revoked')")
    assert made.locator("button").count() == 0
    assert denial(gateway.send(credential, usage=None))["error"]["code"] == "key_revoked"


def test_change_a_sub_account_cap_and_the_next_request_honours_it(gateway: Gateway, page: Any) -> None:
    r = gateway.api("POST", "/v1/sub-accounts", {"name": "initech", "spend_cap_cents": 1, "default_tag": "initech"})
    sa = r.json()
    refused = denial(gateway.send(sa["key"], max_tokens=BIG, usage=None))
    assert refused["error"]["code"] == "insufficient_quota"

    sign_in(page, gateway.url, gateway.org_admin)
    page.click("nav a:has-text('Sub-accounts')")
    page.wait_for_selector(f"tr[data-sub-account='{sa['id']}']")
    acme = page.locator(f"tr[data-sub-account='{gateway.sub_accounts['acme-corp']['id']}']")
    assert "of $25.00" in acme.inner_text()
    shot(page, "sub-accounts")
    page.set_viewport_size(LAPTOP)
    fits_sideways(page)
    page.set_viewport_size({"width": 1440, "height": 900})

    page.click("a:has-text('initech')")
    page.wait_for_selector("h1:has-text('initech')")
    assert page.locator("#cap-input").input_value() == "0.01"
    assert page.locator(".gauge-caption").inner_text() == "$0.00 of $0.01"
    page.wait_for_selector("table.requests .badge:has-text('insufficient quota')")
    page.fill("#cap-input", "10")
    page.click("button:has-text('Save cap')")
    page.wait_for_selector(".toast:has-text('enforced from the next request')")
    assert gateway.api("GET", f"/v1/sub-accounts/{sa['id']}").json()["spend_cap_cents"] == 1000

    honoured = gateway.send(sa["key"], max_tokens=BIG, usage=(1200, 800))
    assert isinstance(honoured, Allow)
    page.locator(f"tr[data-request-id='{honoured.ticket.request_id}']").wait_for(timeout=8_000)
    page.wait_for_selector(".gauge-caption:has-text('of $10.00')")
    page.locator(".toast").wait_for(state="detached")
    shot(page, "sub-account")

    # The cap is typed as a decimal and sent as whole cents, exactly: a third decimal is refused, not rounded.
    def save_cap(text: str) -> None:
        page.fill("#cap-input", text)
        page.click("button:has-text('Save cap')")

    save_cap("1.005")
    page.wait_for_selector(f".cap-form .form-error:has-text('{CAP_HINT}')")
    assert gateway.api("GET", f"/v1/sub-accounts/{sa['id']}").json()["spend_cap_cents"] == 1000  # unchanged
    save_cap("12.34")
    page.wait_for_selector(".toast:has-text('set to $12.34')")
    got = gateway.api("GET", f"/v1/sub-accounts/{sa['id']}").json()
    assert (got["spend_cap_cents"], got["spend_cap_nanos"]) == (1234, 12_340_000_000)
    assert page.locator(".cap-form .form-error").inner_text() == ""

    # Suspend and resume from the page.
    page.click(".page-head button:has-text('Suspend')")
    page.wait_for_selector("h1 .badge:has-text('suspended')")
    assert denial(gateway.send(sa["key"], usage=None))["error"]["code"] == "client_disabled"
    page.click(".page-head button:has-text('Resume')")
    page.wait_for_selector("h1 .badge:has-text('active')")
    # Allowed again under the $12.34 cap; it costs about 1.3 cents, so the month's spend is now above 1 cent.
    assert isinstance(gateway.send(sa["key"], max_tokens=BIG, usage=(5_000, 20_000)), Allow)

    # Lower the cap below what it already spent: even a small next request is refused before dispatch.
    save_cap("0.01")
    page.wait_for_selector(".toast:has-text('set to $0.01')")
    assert gateway.api("GET", f"/v1/sub-accounts/{sa['id']}").json()["spend_cap_cents"] == 1
    assert denial(gateway.send(sa["key"], max_tokens=100, usage=None))["error"]["code"] == "insufficient_quota"
    page.wait_for_selector(".gauge-caption:has-text('of $0.01')")

    page.set_viewport_size(LAPTOP)
    fits_sideways(page)
    shot(page, "sub-account-laptop")
    page.set_viewport_size({"width": 1440, "height": 900})

    page.click("button:has-text('Revoke')")
    page.click(".modal button:has-text('Revoke sub-account')")
    page.wait_for_selector("h1 .badge:has-text('revoked')")
    assert page.locator("#cap-input").is_disabled()
    assert denial(gateway.send(sa["key"], usage=None))["error"]["code"] == "key_revoked"


def test_lost_contact_shows_a_banner_and_recovers(gateway: Gateway, browser: Any) -> None:
    with new_page(browser, expected_errors=("ERR_CONNECTION_REFUSED", "ERR_EMPTY_RESPONSE")) as page:
        sign_in(page, gateway.url, gateway.org_admin)
        page.wait_for_selector("table.requests tbody tr")
        assert page.locator("#banner").is_hidden() and page.locator("#live").inner_text() == "Live"
        gateway.served.stop_http()
        try:
            page.wait_for_selector("#banner:has-text('Lost contact with the gateway')", timeout=10_000)
            assert page.locator("#live").inner_text() == "Reconnecting"
            shot(page, "lost-contact")
        finally:
            gateway.served.start_http()
        page.wait_for_selector("#banner", state="hidden", timeout=10_000)
        assert page.locator("#live").inner_text() == "Live"
        assert page.locator("h1").inner_text() == "Demo Org"  # still signed in, nothing lost


def test_a_token_revoked_mid_session_signs_out(gateway: Gateway, page: Any) -> None:
    token = gateway.admin_token("demo")
    sign_in(page, gateway.url, token)
    page.wait_for_selector("table.requests tbody tr")
    assert gateway.served.runtime is not None
    with gateway.served.runtime.app.db.transaction(immediate=True) as session:
        revoke_admin_token(session, token.split(".", 1)[0], actor="test")
    # The next poll gets a 401: the page signs out and says why.
    page.wait_for_selector("#token", timeout=10_000)
    page.wait_for_selector(".form-error:has-text('Signed out: Invalid or revoked admin token.')")
    assert page.locator("#topbar").is_hidden()
    assert page.evaluate("sessionStorage.getItem('quotagate.dashboard')") is None
    shot(page, "signed-out")


def test_empty_keys_and_sub_accounts_pages_read_well(gateway: Gateway, page: Any) -> None:
    operator = gateway.admin_token(None)
    body = {"organization_id": "org-empty", "organization_slug": "empty", "organization_name": "Empty Org"}
    assert gateway.api("POST", "/admin/organizations", body, operator).status_code == 201
    sign_in(page, gateway.url, gateway.admin_token("empty"))
    page.wait_for_selector("h1:has-text('Empty Org')")
    page.click("nav a:has-text('Keys')")
    page.wait_for_selector("text=No gateway keys yet.")
    assert page.locator("table.keys").count() == 0
    shot(page, "keys-empty")
    page.click("button:has-text('New key')")  # no client to issue a key for: said so, no dialog
    page.wait_for_selector(".toast:has-text('no active client')")
    assert page.locator(".modal").count() == 0
    page.click("nav a:has-text('Sub-accounts')")
    page.wait_for_selector("text=No sub-accounts yet.")
    shot(page, "sub-accounts-empty")


def test_the_page_is_served_from_the_package_with_a_strict_policy(gateway: Gateway) -> None:
    page = httpx.get(gateway.url + "/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "default-src 'none'" in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    assets = re.findall(r'(?:src|href)="(/dashboard/assets/[^"]+)"', page.text)
    assert sorted(assets) == ["/dashboard/assets/app.js", "/dashboard/assets/dashboard.css"]
    for path in (*assets, "/dashboard/assets/charts.js", "/dashboard/assets/format.js"):
        asset = httpx.get(gateway.url + path)
        assert asset.status_code == 200 and asset.text
        assert "http://" not in asset.text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in asset.text
    assert httpx.get(gateway.url + "/dashboard/assets/..%2Fdashboard.py").status_code == 404
    assert httpx.get(gateway.url + "/dashboard/assets/index.html").status_code == 404
    assert "/dashboard" not in httpx.get(gateway.url + "/openapi.json").json()["paths"]
