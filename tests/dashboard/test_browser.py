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
from quotagate.settings import load_settings
from quotagate.store.admin_tokens_repo import issue_admin_token
from quotagate.store.tables import UsageEvent
from tests.dashboard.browser import launched, new_page, prerequisites, shot, sign_in
from tests.http.conftest import OTHER_ORG, admin_token, apply, bearer, call_gateway, denial, stored
from tests.http.threaded import Served, serving_in_thread
from tests.support.gateway import edit_manifest, issue_key, manifest_text

pytestmark = pytest.mark.browser

LAPTOP = {"width": 1366, "height": 768}
# gpt-4o-mini: $0.60 per 1M output tokens, so 20,000 reserved output tokens cost 1.2 cents (over a 1-cent cap).
BIG = 20_000

PROJECTS = [
    {
        "project_id": "proj-research",
        "project_slug": "research",
        "project_name": "Research",
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

    def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, self.url + path, json=body, headers=bearer(self.org_admin), timeout=30)


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
    assert gw.served.runtime is not None
    now = datetime.now(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with gw.served.runtime.app.db.transaction() as session:
        for (request_id,) in session.query(UsageEvent.request_id).all():
            when = max(now - timedelta(minutes=rng.uniform(5, 22 * 60)), month_start)
            session.execute(
                update(UsageEvent).where(UsageEvent.request_id == request_id).values(started_at=when, finished_at=when)
            )


PROVIDER_KEYS = {
    "QUOTAGATE_DEMO_OPENAI_KEY": "sk-provider-openai",
    "QUOTAGATE_DEMO_ANTHROPIC_KEY": "sk-provider-anthropic",
}


@pytest.fixture(autouse=True)
def provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway reads provider keys from the environment at use; each test starts with a clean one."""
    for name, value in PROVIDER_KEYS.items():
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
        for name, value in PROVIDER_KEYS.items():
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
    page.click("button[role=tab]:has-text('Requests')")
    shot(page, "overview-admin")

    # Live: a request through the gateway appears without a reload, and the figures follow.
    outcome = gateway.send(gateway.keys["support-key"], model="gpt-5.4-mini", usage=(321, 123))
    assert isinstance(outcome, Allow), outcome
    row = page.locator(f"tr[data-request-id='{outcome.ticket.request_id}']")
    row.wait_for(timeout=8_000)
    assert "321 → 123" in row.inner_text() and "support-key" in row.inner_text()
    more = str(summary["requests"] + 1)
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
    page.fill("#token", global_admin_token(gateway))
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


def global_admin_token(gateway: Gateway) -> str:
    assert gateway.served.runtime is not None
    app = gateway.served.runtime.app
    with app.db.transaction(immediate=True) as session:
        _, credential = issue_admin_token(session, app.hasher, organization=None, name="operator", actor="test")
    return str(credential)


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

    page.click("button:has-text('Revoke')")
    page.click(".modal button:has-text('Revoke sub-account')")
    page.wait_for_selector("h1 .badge:has-text('revoked')")
    assert page.locator("#cap-input").is_disabled()
    assert denial(gateway.send(sa["key"], usage=None))["error"]["code"] == "key_revoked"


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
