// The Quotagate dashboard: one page over the admin and portal API.
// The credential lives only in this tab's sessionStorage and travels only in the Authorization header.

import { bars, donut, gauge, timeSeries } from "./charts.js";
import * as fmt from "./format.js";

const STORE = "quotagate.dashboard";
const POLL_MS = 3000;
const WINDOWS = [
  ["24h", "24 hours"],
  ["7d", "7 days"],
  ["30d", "30 days"],
  ["90d", "90 days"],
];
const HOURLY_LIMIT_DAYS = 31;
const CAP_HINT = "Enter the monthly cap in whole cents, e.g. 250.00 (digits and at most two decimals).";

// A shared link carries the credential in the fragment, which browsers never send to a server.
// Take it before anything else and leave no trace of it in the address bar or the history.
(function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return;
  history.replaceState(null, "", `${location.pathname}#/overview`);
  if (token.trim()) sessionStorage.setItem(STORE, JSON.stringify({ token: token.trim() }));
})();

const state = {
  token: null,
  kind: null, // "admin" | "key"
  admin: null, // /admin/me
  key: null, // /api/balance of the signed-in key
  org: null, // {id, slug, name} the admin is looking at
  orgs: [],
  window: "24h",
  bucket: "hour",
  metric: "requests",
};
let generation = 0; // bumped on every navigation: work started for an older view stops there
let timers = [];

// ---------------------------------------------------------------- DOM helpers

function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

const $ = (id) => document.getElementById(id);

function card(title, body, { extra, className = "" } = {}) {
  return h(
    "section",
    { class: `card ${className}` },
    h("header", { class: "card-head" }, h("h2", {}, title), extra),
    body,
  );
}

function empty(text, hint) {
  return h("div", { class: "empty" }, h("p", {}, text), hint ? h("p", { class: "hint" }, hint) : null);
}

function badge(text, tone) {
  return h("span", { class: `badge ${tone}` }, text);
}

function statusBadge(status) {
  const tone = { active: "ok", suspended: "warn", revoked: "danger", disabled: "danger" }[status] || "muted";
  return badge(status, tone);
}

function toast(message, tone = "ok") {
  const node = h("div", { class: `toast ${tone}`, role: "status" }, message);
  $("toasts").appendChild(node);
  setTimeout(() => node.remove(), 4000);
}

function banner(message) {
  const node = $("banner");
  node.hidden = !message;
  node.textContent = message || "";
}

function failure(error, retry) {
  return h(
    "div",
    { class: "failure", role: "alert" },
    h("p", {}, `Could not load this: ${error.message}`),
    retry ? h("button", { class: "button", type: "button", onclick: retry }, "Try again") : null,
  );
}

function modal(title, body, actions) {
  const close = () => overlay.remove();
  const overlay = h(
    "div",
    { class: "overlay", onclick: (e) => e.target === overlay && close() },
    h(
      "div",
      { class: "modal", role: "dialog", "aria-modal": "true", "aria-label": title },
      h("h2", {}, title),
      body,
      h("div", { class: "modal-actions" }, actions(close)),
    ),
  );
  overlay.addEventListener("keydown", (e) => e.key === "Escape" && close());
  document.body.appendChild(overlay);
  overlay.querySelector("input, select, button.primary, button")?.focus();
  return close;
}

function confirmDialog(title, text, action, run) {
  modal(title, h("p", {}, text), (close) => [
    h("button", { class: "button ghost", type: "button", onclick: close }, "Cancel"),
    h(
      "button",
      {
        class: "button danger",
        type: "button",
        onclick: async (e) => {
          e.target.disabled = true;
          try {
            await run();
            close();
          } catch (error) {
            e.target.disabled = false;
            toast(error.message, "danger");
          }
        },
      },
      action,
    ),
  ]);
}

// The one time a secret is shown: with a copy button, gone from the page when the dialog closes.
function showSecret(title, credential, what) {
  const field = h("input", {
    class: "secret",
    readonly: true,
    value: credential,
    "aria-label": "secret",
    spellcheck: "false",
  });
  const copy = h(
    "button",
    {
      class: "button primary",
      type: "button",
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(credential);
        } catch {
          field.select(); // plain-HTTP pages have no clipboard API: fall back to the selection
          document.execCommand("copy");
        }
        copy.textContent = "Copied ✓";
      },
    },
    "Copy",
  );
  modal(
    title,
    h(
      "div",
      {},
      h("p", {}, `Copy ${what} now: this is the only time it is shown. Quotagate keeps only a hash of the secret.`),
      h("div", { class: "secret-row" }, field, copy),
    ),
    (close) => [h("button", { class: "button", type: "button", onclick: close }, "Done")],
  );
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, { method = "GET", body, params, token = state.token } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null) url.searchParams.set(k, v);
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "the gateway did not answer (is it running, and is this the right address?)", "network");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new ApiError(
      response.status,
      data?.error?.message || `${response.status} ${response.statusText}`,
      data?.error?.code,
    );
    if (response.status === 401 && token === state.token && state.kind) signOut(`Signed out: ${error.message}`);
    throw error;
  }
  return data;
}

// What an admin looks at: its own organization, or the one a global admin picked.
function orgParams() {
  return state.kind === "admin" && state.org ? { organization: state.org.id } : {};
}

function activity(path) {
  return state.kind === "admin" ? `/admin/activity/${path}` : `/api/activity/${path}`;
}

async function allPages(path, params) {
  const out = [];
  let cursor;
  do {
    const page = await api(path, { params: { ...params, limit: 500, cursor } });
    out.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor);
  return out;
}

// ---------------------------------------------------------------- session

function save() {
  const { token, window, bucket, metric } = state;
  sessionStorage.setItem(STORE, JSON.stringify({ token, window, bucket, metric, org: state.org?.id }));
}

async function signIn(token, preferredOrg) {
  let admin = null;
  let key = null;
  let refusal;
  try {
    admin = await api("/admin/me", { token });
  } catch (error) {
    if (error.status !== 401) throw error;
    refusal = error;
  }
  if (!admin) {
    try {
      key = await api("/api/balance", { token });
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        const message =
          error.status === 403 ? error.message : "This is neither a valid admin token nor a valid gateway key.";
        throw new ApiError(error.status, message, error.code || refusal?.code);
      }
      throw error;
    }
  }
  Object.assign(state, { token, kind: admin ? "admin" : "key", admin, key });
  if (admin) await loadOrganizations(preferredOrg);
  else fmt.setCurrency(key.currency);
  save();
}

async function loadOrganizations(preferred) {
  if (state.admin.organization_id) {
    const org = await api(`/admin/organizations/${encodeURIComponent(state.admin.organization_id)}`);
    state.orgs = [org];
  } else {
    state.orgs = await allPages("/admin/organizations", {});
  }
  const pick =
    state.orgs.find((o) => o.organization_id === preferred) ||
    state.orgs.find((o) => o.status === "active") ||
    state.orgs[0];
  state.org = pick ? { id: pick.organization_id, slug: pick.organization_slug, name: pick.organization_name } : null;
}

function signOut(message) {
  sessionStorage.removeItem(STORE);
  Object.assign(state, { token: null, kind: null, admin: null, key: null, org: null, orgs: [] });
  stopTimers();
  if (location.hash !== "#/overview") history.replaceState(null, "", `${location.pathname}#/overview`);
  renderLogin(message);
}

// ---------------------------------------------------------------- chrome and routing

function stopTimers() {
  generation += 1;
  for (const t of timers) clearTimeout(t);
  timers = [];
}

// Runs `fn` now and every POLL_MS while this view is shown; a failed poll marks the page as reconnecting.
function live(fn, every = POLL_MS) {
  const mine = generation;
  const tick = async () => {
    if (mine !== generation) return;
    if (!document.hidden) {
      try {
        await fn();
        setLive("ok");
        banner("");
      } catch (error) {
        if (mine !== generation) return;
        setLive("error");
        if (error.status === 0) banner("Lost contact with the gateway; retrying every few seconds…");
      }
    } else {
      setLive("paused");
    }
    if (mine === generation) timers.push(setTimeout(tick, every));
  };
  return tick();
}

function setLive(mode) {
  const node = $("live");
  node.dataset.mode = mode;
  node.textContent = { ok: "Live", error: "Reconnecting", paused: "Paused" }[mode];
}

function chrome() {
  $("topbar").hidden = false;
  const route = location.hash.split("/")[1] || "overview";
  const links = [["overview", "Overview"]];
  if (state.kind === "admin") links.push(["keys", "Keys"], ["sub-accounts", "Sub-accounts"]);
  $("nav").replaceChildren(
    ...links.map(([path, label]) =>
      h(
        "a",
        { href: `#/${path}`, class: route === path ? "active" : "", "aria-current": route === path ? "page" : null },
        label,
      ),
    ),
  );
  const picker = $("org-picker");
  picker.replaceChildren();
  if (state.kind === "admin" && state.orgs.length > 1) {
    const select = h(
      "select",
      {
        "aria-label": "Organization",
        onchange: async (e) => {
          const org = state.orgs.find((o) => o.organization_id === e.target.value);
          state.org = { id: org.organization_id, slug: org.organization_slug, name: org.organization_name };
          save();
          if (location.hash.startsWith("#/sub-accounts/")) location.hash = "#/sub-accounts";
          else route_();
        },
      },
      state.orgs.map((o) =>
        h("option", { value: o.organization_id, selected: o.organization_id === state.org?.id }, o.organization_name),
      ),
    );
    picker.append(select);
  }
  $("who").replaceChildren(
    state.kind === "admin"
      ? h("span", {}, badge(state.admin.organization_id ? "org admin" : "global admin", "muted"), " ", state.admin.name)
      : h("span", {}, badge("gateway key", "muted"), " ", state.key.key_id),
  );
}

function route_() {
  stopTimers();
  if (!state.kind) return;
  chrome();
  const [, page, id] = location.hash.split("/");
  if (state.kind === "admin" && page === "keys") return keysView();
  if (state.kind === "admin" && page === "sub-accounts" && id) return subAccountView(decodeURIComponent(id));
  if (state.kind === "admin" && page === "sub-accounts") return subAccountsView();
  if (page !== "overview") history.replaceState(null, "", `${location.pathname}#/overview`);
  return overviewView();
}

function pageHead(title, sub, ...tools) {
  return h(
    "div",
    { class: "page-head" },
    h("div", {}, h("h1", {}, title), sub ? h("p", { class: "sub" }, sub) : null),
    h("div", { class: "tools" }, tools),
  );
}

function windowControls(onChange) {
  const days = (w) => (w.endsWith("d") ? Number(w.slice(0, -1)) : 1);
  const segmented = (items, current, set) =>
    h(
      "div",
      { class: "segmented", role: "group" },
      items.map(([value, label, disabled]) =>
        h(
          "button",
          {
            type: "button",
            class: value === current ? "on" : "",
            "aria-pressed": String(value === current),
            disabled,
            onclick: () => set(value),
          },
          label,
        ),
      ),
    );
  return [
    segmented(WINDOWS, state.window, (w) => {
      state.window = w;
      if (days(w) > HOURLY_LIMIT_DAYS) state.bucket = "day";
      save();
      onChange();
    }),
    segmented(
      [
        ["hour", "Hourly", days(state.window) > HOURLY_LIMIT_DAYS],
        ["day", "Daily"],
      ],
      state.bucket,
      (b) => {
        state.bucket = b;
        save();
        onChange();
      },
    ),
  ];
}

const windowLabel = () => `last ${WINDOWS.find(([w]) => w === state.window)[1]}`;

// ---------------------------------------------------------------- panels shared by the views

function kpi(label, value, sub, tone) {
  return h(
    "div",
    { class: `kpi ${tone || ""}` },
    h("div", { class: "kpi-label" }, label),
    h("div", { class: "kpi-value" }, value),
    h("div", { class: "kpi-sub" }, sub),
  );
}

function kpis(totals, extra = []) {
  return h(
    "div",
    { class: "kpis" },
    kpi("Spend", fmt.money(totals.cost), windowLabel()),
    kpi(
      "Requests",
      fmt.count(totals.requests),
      totals.denied ? `${fmt.count(totals.denied)} blocked` : "none blocked",
      totals.denied ? "alert" : "",
    ),
    kpi(
      "Tokens",
      fmt.count(totals.input_tokens + totals.output_tokens),
      `${fmt.count(totals.input_tokens)} in · ${fmt.count(totals.output_tokens)} out`,
    ),
    kpi("Avg latency", fmt.latency(totals.avg_latency_ms), "admitted requests"),
    extra,
  );
}

const METRICS = {
  requests: {
    label: "Requests",
    series: [
      { key: "requests", label: "Admitted", className: "s0" },
      { key: "denied", label: "Blocked", className: "sd" },
    ],
    format: fmt.count,
  },
  tokens: {
    label: "Tokens",
    series: [
      { key: "input_tokens", label: "Input", className: "s1" },
      { key: "output_tokens", label: "Output", className: "s2" },
    ],
    format: fmt.count,
  },
  cost: {
    label: "Spend",
    kind: "area",
    series: [{ key: "cost", label: "Spend", className: "s0" }],
    format: fmt.money,
    axis: fmt.moneyShort,
  },
};

function seriesCard(series) {
  const body = h("div", { class: "chart-box" });
  const draw = () => {
    const m = METRICS[state.metric];
    const anything = series.points.some((p) => p.requests || p.denied);
    legend.hidden = !anything;
    if (!anything) {
      body.replaceChildren(
        empty(
          `No requests in the ${windowLabel()}.`,
          "Requests sent with a gateway key show up here within a few seconds.",
        ),
      );
      return;
    }
    timeSeries(body, series.points, m.series, {
      kind: m.kind || "bar",
      integers: m.kind !== "area",
      format: m.format,
      axisFormat: m.axis || m.format,
      label: (s) => fmt.bucketLabel(s, series.bucket),
      title: (s) => fmt.bucketTitle(s, series.bucket),
      ariaLabel: `${m.label} per ${series.bucket}`,
    });
  };
  const tabs = h(
    "div",
    { class: "segmented small", role: "tablist" },
    Object.entries(METRICS).map(([key, m]) =>
      h(
        "button",
        {
          type: "button",
          role: "tab",
          class: key === state.metric ? "on" : "",
          "aria-selected": String(key === state.metric),
          onclick: (e) => {
            state.metric = key;
            save();
            for (const b of tabs.children) b.classList.toggle("on", b === e.target);
            draw();
            drawLegend();
          },
        },
        m.label,
      ),
    ),
  );
  const legend = h("div", { class: "series-legend" });
  const drawLegend = () =>
    legend.replaceChildren(
      ...METRICS[state.metric].series.map((s) => h("span", {}, h("span", { class: `swatch ${s.className}` }), s.label)),
    );
  const node = card(`Activity per ${series.bucket === "day" ? "day (UTC)" : "hour"}`, h("div", {}, body, legend), {
    extra: tabs,
    className: "wide",
  });
  queueMicrotask(draw);
  drawLegend();
  return node;
}

function scopeLabel(limit) {
  const kind =
    { organization: "Organization", project: "Project", client: "Client", key: "Key" }[limit.scope_type] ||
    limit.scope_type;
  return `${kind} · ${limit.scope_name}`;
}

function capsCard(limits, { title = "Spend this month against caps", max = 8, className = "wide" } = {}) {
  const caps = limits.filter((l) => l.spend_limit);
  const body = h("div", { class: "gauges" });
  if (!caps.length) {
    body.append(
      empty("No spend caps are set.", "Set monthly spend limits on quotas in the manifest or with the admin API."),
    );
  } else {
    const used = (l) => Number(l.spent_this_period.amount) / Math.max(Number(l.spend_limit.amount), 1e-12);
    // The organization's own cap first, then the closest to their limit.
    const ordered = [...caps].sort(
      (a, b) => (b.scope_type === "organization") - (a.scope_type === "organization") || used(b) - used(a),
    );
    for (const l of ordered.slice(0, max)) {
      const box = h("div", { class: "gauge-box" });
      const notes = [];
      if (l.enforcement_mode === "monitor") notes.push("monitor only");
      if (l.models) notes.push(`only ${l.models.join(", ")}`);
      gauge(box, {
        value: Number(l.spent_this_period.amount),
        max: Number(l.spend_limit.amount),
        title: scopeLabel(l),
        caption: `${fmt.money(l.spent_this_period.amount)} of ${fmt.money(l.spend_limit.amount)}`,
        note: notes.join(" · "),
      });
      body.append(box);
    }
    if (caps.length > max) body.append(h("p", { class: "hint more" }, `and ${caps.length - max} more caps`));
  }
  return card(title, body, { className });
}

function spendRows(rows, label, extra = () => ({})) {
  return rows
    .filter((r) => r.requests > 0)
    .map((r) => ({
      label: label(r),
      value: Number(r.cost),
      display: fmt.money(r.cost),
      sub: fmt.requests(r.requests),
      ...extra(r),
    }));
}

function modelsCard(summary) {
  const body = h("div", {});
  const rows = spendRows(summary.by_model, (r) => r.id);
  if (rows.length) bars(body, rows);
  else body.append(empty("No admitted requests yet."));
  return card("Spend by model", body);
}

function blockedCard(summary, className = "") {
  const body = h("div", {});
  const rows = summary.blocked_by_reason.map((r) => ({
    label: fmt.reason(r.id),
    value: r.denied,
    display: fmt.count(r.denied),
    className: "sd",
  }));
  if (rows.length) bars(body, rows);
  else
    body.append(
      empty(
        "Nothing blocked.",
        "Refused requests (rate limits, caps, unknown models, bad keys) are counted here by reason.",
      ),
    );
  return card("Blocked requests by reason", body, { className });
}

function statusCell(r) {
  if (r.decision === "denied") return badge(`${r.status} ${fmt.reason(r.deny_reason)}`, "danger");
  return badge(String(r.status), r.status >= 500 || r.status === 0 ? "warn" : r.status >= 400 ? "danger" : "ok");
}

function requestsCard(title = "Recent requests") {
  const body = h("div", { class: "table-wrap" });
  const node = card(title, body, {
    extra: h("span", { class: "hint" }, "newest first · updates live"),
    className: "wide",
  });
  let seen = null;
  let newest;
  node.update = (rows) => {
    const changed = rows[0]?.request_id !== newest;
    newest = rows[0]?.request_id;
    if (!rows.length) {
      body.replaceChildren(
        empty(
          "No requests yet.",
          "Each request through the gateway — admitted or blocked — appears here within a few seconds.",
        ),
      );
      seen = new Set();
      return changed;
    }
    const admin = state.kind === "admin";
    const actors = rows.some((r) => r.actor);
    const table = h(
      "table",
      { class: "requests" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", {}, "Time"),
          h("th", {}, "Key"),
          admin ? h("th", {}, "Client") : null,
          actors ? h("th", {}, "Actor") : null,
          h("th", {}, "Model"),
          h("th", { class: "num" }, "Tokens in → out"),
          h("th", { class: "num" }, "Cost"),
          h("th", { class: "num" }, "Latency"),
          h("th", {}, "Status"),
        ),
      ),
      h(
        "tbody",
        {},
        rows.map((r) =>
          h(
            "tr",
            { class: seen && !seen.has(r.request_id) ? "fresh" : "", "data-request-id": r.request_id },
            h("td", { title: r.started_at }, fmt.when(r.started_at)),
            h("td", { class: "mono" }, r.key_id || "—"),
            admin ? h("td", {}, r.client_name || "—") : null,
            actors ? actorCell(r.actor) : null,
            h("td", {}, r.model || "—", r.stream ? h("span", { class: "tag" }, "stream") : null),
            h(
              "td",
              { class: "num" },
              r.decision === "denied" ? "—" : `${fmt.count(r.input_tokens)} → ${fmt.count(r.output_tokens)}`,
            ),
            h("td", { class: "num" }, r.decision === "denied" ? "—" : fmt.money(r.cost)),
            h("td", { class: "num" }, r.decision === "denied" ? "—" : fmt.latency(r.latency_ms)),
            h("td", {}, statusCell(r)),
          ),
        ),
      ),
    );
    body.replaceChildren(table);
    seen = new Set(rows.map((r) => r.request_id));
    return changed;
  };
  return node;
}

// A verified actor (signed X-Quotagate-Actor): the user, with its team and app under it.
function actorCell(actor) {
  if (!actor) return h("td", { class: "muted" }, "—");
  const title = Object.entries(actor)
    .map(([k, v]) => `${k}=${v}`)
    .join(";");
  const rest = ["team", "app"].filter((k) => actor[k]).map((k) => `${k} ${actor[k]}`);
  return h(
    "td",
    { class: "actor", title },
    actor.user || "no user",
    rest.length ? h("div", { class: "muted small" }, rest.join(" · ")) : null,
  );
}

// [dimension, summary field, tab label]
const ACTOR_DIMENSIONS = [
  ["team", "by_actor_team", "Team"],
  ["user", "by_actor_user", "User"],
  ["app", "by_actor_app", "App"],
];
let actorDimension = "team"; // the tab last chosen on the actor card, kept across redraws

// Spend per verified team, user or app; shown only when some usage in the window is attributed.
function actorsCard(summary) {
  const dims = ACTOR_DIMENSIONS.filter(([, key]) => summary[key].some((r) => r.requests > 0));
  if (!dims.length) return null;
  if (!dims.some(([k]) => k === actorDimension)) actorDimension = dims[0][0];
  const body = h("div", {});
  const draw = () => {
    const [, key] = dims.find(([k]) => k === actorDimension);
    bars(body, spendRows(summary[key], (r) => r.id));
  };
  const tabs = h(
    "div",
    { class: "segmented small", role: "tablist", "aria-label": "Attribute spend to" },
    dims.map(([k, , label]) =>
      h(
        "button",
        {
          type: "button",
          role: "tab",
          class: k === actorDimension ? "on" : "",
          "aria-selected": String(k === actorDimension),
          onclick: (e) => {
            actorDimension = k;
            for (const b of tabs.children) {
              b.classList.toggle("on", b === e.target);
              b.setAttribute("aria-selected", String(b === e.target));
            }
            draw();
          },
        },
        label,
      ),
    ),
  );
  draw();
  return card("Spend by actor", body, { extra: tabs, className: "wide actors" });
}

// Polls the newest requests; when one arrives, `refresh` redraws the figures and charts too.
function watchRequests(panel, params, refresh) {
  let first = true;
  return live(async () => {
    const page = await api(activity("requests"), { params: { ...params, limit: 25 } });
    if (panel.update(page.data) && !first) await refresh();
    first = false;
  });
}

function loading(view) {
  view.replaceChildren(h("div", { class: "loading" }, "Loading…"));
}

// ---------------------------------------------------------------- overview

async function overviewView() {
  const view = $("view");
  const mine = generation;
  loading(view);
  const isAdmin = state.kind === "admin";
  if (isAdmin && !state.org) {
    view.replaceChildren(
      empty(
        "No organizations yet.",
        "Apply a manifest (quotagate manifest apply) or create one with POST /admin/organizations.",
      ),
    );
    return;
  }
  const title = isAdmin ? state.org.name : `Key ${state.key.key_id}`;
  const sub = isAdmin
    ? `Organization ${state.org.slug}`
    : `${state.key.client} · project ${state.key.project} · ${state.key.organization}`;
  const figures = h("div", { class: "grid" });
  const requests = requestsCard();
  const load = async () => {
    const params = { window: state.window, ...orgParams() };
    const [summary, series, balance] = await Promise.all([
      api(activity("summary"), { params }),
      api(activity("series"), { params: { ...params, bucket: state.bucket } }),
      isAdmin ? api("/admin/activity/balance", { params: orgParams() }) : api("/api/balance"),
    ]);
    if (mine !== generation) return;
    fmt.setCurrency(balance.currency);
    figures.replaceChildren(...overviewPanels(summary, series, balance));
  };
  view.replaceChildren(
    pageHead(
      title,
      sub,
      windowControls(() => route_()),
    ),
    figures,
    h("div", { class: "grid" }, requests),
  );
  try {
    await load();
  } catch (error) {
    if (mine === generation) figures.replaceChildren(failure(error, () => route_()));
    return;
  }
  watchRequests(requests, orgParams(), load);
}

function balanceKpi(balance) {
  if (state.kind === "key") {
    return balance.balance
      ? kpi("Balance", fmt.money(balance.balance.amount), "left to spend this month")
      : kpi("Balance", "No limit", "no cap or prepaid credit");
  }
  if (!balance.credits.length) return kpi("Credits", "—", "no prepaid credits loaded");
  const left = balance.credits.reduce((s, c) => s + Number(c.balance.amount), 0);
  const loaded = balance.credits.reduce((s, c) => s + Number(c.loaded.amount), 0);
  return kpi("Credits left", fmt.money(left), `of ${fmt.money(loaded)} loaded`, left <= 0 ? "alert" : "");
}

function overviewPanels(summary, series, balance) {
  const panels = [
    kpis(summary.totals, [
      kpi("This month", fmt.money(balance.spend_this_period.amount), `spend in ${balance.period}`),
      balanceKpi(balance),
    ]),
    capsCard(balance.limits),
    seriesCard(series),
    modelsCard(summary),
  ];
  if (state.kind === "admin") {
    const projects = summary.by_project.filter((r) => r.requests > 0);
    const projectBody = h("div", {});
    if (projects.length) {
      donut(
        projectBody,
        projects.map((r) => ({ label: r.name || r.id, value: Number(r.cost), display: fmt.money(r.cost) })),
        { centre: fmt.money(summary.totals.cost), centreSub: windowLabel() },
      );
    } else projectBody.append(empty("No spend yet."));
    panels.push(card("Spend by project", projectBody));
    const clientBody = h("div", {});
    const clients = spendRows(
      summary.by_client,
      (r) => r.name || r.id,
      (r) =>
        r.client_type === "sub_account"
          ? {
              sub: `sub-account · ${fmt.requests(r.requests)}`,
              href: `#/sub-accounts/${encodeURIComponent(r.id)}`,
              className: "s1",
            }
          : {},
    );
    if (clients.length) bars(clientBody, clients);
    else clientBody.append(empty("No spend yet."));
    panels.push(card("Spend by client and sub-account", clientBody));
    panels.push(topSpendersCard(summary));
  }
  panels.push(blockedCard(summary, state.kind === "admin" ? "" : "span2"));
  const actors = actorsCard(summary);
  if (actors) panels.push(actors);
  return panels;
}

function topSpendersCard(summary) {
  const rows = summary.by_key.filter((r) => r.requests > 0);
  const total = rows.reduce((s, r) => s + Number(r.cost), 0);
  const body = rows.length
    ? h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              h("th", {}, "Key"),
              h("th", {}, "Client"),
              h("th", { class: "num" }, "Requests"),
              h("th", { class: "num" }, "Tokens"),
              h("th", { class: "num" }, "Spend"),
              h("th", { class: "num" }, "Share"),
            ),
          ),
          h(
            "tbody",
            {},
            rows.map((r) =>
              h(
                "tr",
                {},
                h("td", { class: "mono" }, r.id),
                h("td", {}, r.client_name || "—", r.project ? h("span", { class: "muted" }, ` · ${r.project}`) : null),
                h("td", { class: "num" }, fmt.count(r.requests)),
                h("td", { class: "num" }, fmt.count(r.input_tokens + r.output_tokens)),
                h("td", { class: "num strong" }, fmt.money(r.cost)),
                h("td", { class: "num" }, fmt.percent(total > 0 ? Number(r.cost) / total : 0)),
              ),
            ),
          ),
        ),
      )
    : empty("No spenders yet.");
  return card("Top spenders", body, { className: "span2" });
}

// ---------------------------------------------------------------- keys

async function keysView() {
  const view = $("view");
  const mine = generation;
  const table = h("div", { class: "table-wrap" }, h("div", { class: "loading" }, "Loading…"));
  const newKey = h(
    "button",
    { class: "button primary", type: "button", onclick: () => newKeyDialog(() => load()) },
    "New key",
  );
  view.replaceChildren(
    pageHead("Gateway keys", `Organization ${state.org?.slug ?? "—"} · last used and spend update live`, newKey),
    h("div", { class: "grid" }, card("Keys", table, { className: "wide" })),
  );
  let shown;
  const load = async () => {
    const keys = await allPages("/admin/activity/keys", orgParams());
    // Redraw only on a change, so a poll never swaps a button away under the pointer.
    if (mine !== generation || JSON.stringify(keys) === shown) return;
    shown = JSON.stringify(keys);
    table.replaceChildren(
      keys.length
        ? keysTable(keys, load)
        : empty("No gateway keys yet.", "Create one with “New key”, or declare keys in the manifest."),
    );
  };
  try {
    await load();
  } catch (error) {
    table.replaceChildren(failure(error, () => route_()));
    return;
  }
  live(load, 5000);
}

function keyAction(label, tone, run) {
  return h(
    "button",
    {
      class: `button small ${tone}`,
      type: "button",
      onclick: async (e) => {
        e.target.disabled = true;
        try {
          await run();
        } catch (error) {
          toast(error.message, "danger");
        } finally {
          e.target.disabled = false;
        }
      },
    },
    label,
  );
}

function keysTable(keys, reload) {
  const rowActions = (k) => {
    const id = encodeURIComponent(k.key_id);
    const out = [];
    if (k.status === "revoked") return out;
    if (!k.issued && k.status === "active") {
      out.push(
        keyAction("Issue secret", "primary", async () => {
          const issued = await api(`/admin/keys/${id}/issue`, { method: "POST" });
          showSecret(`Secret for ${k.key_id}`, issued.credential, "this key");
          await reload();
        }),
      );
    }
    if (k.status === "active") {
      out.push(
        keyAction("Suspend", "ghost", async () => {
          await api(`/admin/keys/${id}/suspend`, { method: "POST" });
          toast(`Key ${k.key_id} suspended: its requests are refused until resumed.`);
          await reload();
        }),
      );
    }
    if (k.status === "suspended") {
      out.push(
        keyAction("Resume", "ghost", async () => {
          await api(`/admin/keys/${id}/resume`, { method: "POST" });
          toast(`Key ${k.key_id} resumed.`);
          await reload();
        }),
      );
    }
    out.push(
      h(
        "button",
        {
          class: "button small danger-ghost",
          type: "button",
          onclick: () =>
            confirmDialog(
              `Revoke ${k.key_id}?`,
              "Requests with this key are refused at once, in every gateway process within a second. Revocation cannot be undone; its usage history stays.",
              "Revoke key",
              async () => {
                await api(`/admin/keys/${id}/revoke`, { method: "POST" });
                toast(`Key ${k.key_id} revoked.`);
                await reload();
              },
            ),
        },
        "Revoke",
      ),
    );
    return out;
  };
  return h(
    "table",
    { class: "keys" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "Key"),
        h("th", {}, "Client"),
        h("th", {}, "Status"),
        h("th", {}, "Last used"),
        h("th", { class: "num" }, "Requests this month"),
        h("th", { class: "num" }, "Spend this month"),
        h("th", {}, "Expires"),
        h("th", {}, ""),
      ),
    ),
    h(
      "tbody",
      {},
      keys.map((k) =>
        h(
          "tr",
          { "data-key-id": k.key_id },
          h(
            "td",
            { class: "mono" },
            k.key_id,
            k.managed_by === "manifest" ? h("span", { class: "tag" }, "manifest") : null,
          ),
          h("td", {}, k.client_name || k.client_id, h("span", { class: "muted" }, ` · ${k.project || k.project_id}`)),
          h("td", {}, statusBadge(k.status), k.issued ? null : badge("no secret", "muted")),
          h("td", { title: k.last_used_at || "" }, fmt.ago(k.last_used_at)),
          h("td", { class: "num" }, fmt.count(k.requests_this_period)),
          h("td", { class: "num" }, fmt.money(k.spend_this_period.amount)),
          h("td", {}, k.expires_at ? fmt.when(k.expires_at) : "never"),
          h("td", { class: "actions" }, rowActions(k)),
        ),
      ),
    ),
  );
}

async function newKeyDialog(reload) {
  let clients;
  try {
    clients = (await allPages("/admin/clients", orgParams())).filter((c) => c.status === "active");
  } catch (error) {
    toast(error.message, "danger");
    return;
  }
  if (!clients.length) {
    toast("This organization has no active client to issue a key for.", "danger");
    return;
  }
  const client = h(
    "select",
    { id: "new-key-client", required: true },
    clients.map((c) => h("option", { value: c.client_id }, `${c.client_name} (${c.client_id})`)),
  );
  const keyId = h("input", {
    id: "new-key-id",
    placeholder: "generated when empty",
    pattern: "[A-Za-z0-9._\\-]+",
    maxlength: "64",
  });
  const expires = h("input", { id: "new-key-expires", type: "date" });
  const error = h("p", { class: "form-error", role: "alert" });
  const form = h(
    "form",
    { class: "form" },
    h("label", {}, "Client", client),
    h("label", {}, "Key id", keyId),
    h("label", {}, "Expires (optional)", expires),
    error,
  );
  modal("New gateway key", form, (close) => {
    const submit = async (e) => {
      e.preventDefault();
      const body = { client_id: client.value };
      if (keyId.value.trim()) body.key_id = keyId.value.trim();
      if (expires.value) body.expires_at = new Date(`${expires.value}T00:00:00Z`).toISOString();
      try {
        const created = await api("/admin/keys", { method: "POST", body });
        close();
        showSecret(`Key ${created.key_id} created`, created.credential, "the key");
        await reload();
      } catch (err) {
        error.textContent = err.message;
      }
    };
    form.addEventListener("submit", submit);
    return [
      h("button", { class: "button ghost", type: "button", onclick: close }, "Cancel"),
      h("button", { class: "button primary", type: "button", onclick: submit }, "Create key"),
    ];
  });
}

// ---------------------------------------------------------------- sub-accounts

async function subAccountsView() {
  const view = $("view");
  const mine = generation;
  const body = h("div", { class: "table-wrap" }, h("div", { class: "loading" }, "Loading…"));
  const create = h(
    "button",
    { class: "button primary", type: "button", onclick: () => newSubAccountDialog() },
    "New sub-account",
  );
  view.replaceChildren(
    pageHead("Sub-accounts", "One per end customer: its own key, monthly spend cap and rate limits", create),
    h("div", { class: "grid" }, card("Sub-accounts", body, { className: "wide" })),
  );
  let shown;
  const load = async () => {
    const [items, balance] = await Promise.all([
      allPages("/v1/sub-accounts", orgParams()),
      api("/admin/activity/balance", { params: orgParams() }),
    ]);
    const seen = JSON.stringify([items, balance.limits]);
    if (mine !== generation || seen === shown) return;
    shown = seen;
    fmt.setCurrency(balance.currency);
    const spent = Object.fromEntries(
      balance.limits.filter((l) => l.scope_type === "client").map((l) => [l.scope_id, l]),
    );
    body.replaceChildren(
      items.length
        ? subAccountsTable(items, spent)
        : empty("No sub-accounts yet.", "Create one with “New sub-account”, or POST /v1/sub-accounts."),
    );
  };
  try {
    await load();
  } catch (error) {
    body.replaceChildren(failure(error, () => route_()));
    return;
  }
  live(load, 5000);
}

function meter(spent, cap) {
  const fraction = cap > 0 ? spent / cap : 0;
  const fill = h("span", { class: `meter-fill ${fraction >= 0.9 ? "danger" : fraction >= 0.75 ? "warn" : "ok"}` });
  fill.style.width = `${Math.min(100, fraction * 100)}%`;
  return h("span", { class: "meter" }, fill);
}

function subAccountsTable(items, spent) {
  return h(
    "table",
    {},
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "Name"),
        h("th", {}, "Status"),
        h("th", {}, "Spent this month"),
        h("th", { class: "num" }, "RPM"),
        h("th", {}, "Key"),
        h("th", {}, "Tag"),
      ),
    ),
    h(
      "tbody",
      {},
      items.map((sa) => {
        const limit = spent[sa.id];
        const used = limit?.spent_this_period ? Number(limit.spent_this_period.amount) : 0;
        const cap = sa.spend_cap_nanos === null ? null : fmt.nanosToAmount(sa.spend_cap_nanos);
        return h(
          "tr",
          { "data-sub-account": sa.id },
          h(
            "td",
            {},
            h("a", { href: `#/sub-accounts/${encodeURIComponent(sa.id)}` }, sa.name),
            h("div", { class: "muted mono small" }, sa.id),
          ),
          h("td", {}, statusBadge(sa.status)),
          h(
            "td",
            {},
            cap === null
              ? fmt.money(used)
              : h("div", { class: "spent" }, meter(used, cap), `${fmt.money(used)} of ${fmt.money(cap)}`),
          ),
          h("td", { class: "num" }, sa.rate_limit_rpm ? fmt.count(sa.rate_limit_rpm) : "—"),
          h("td", { class: "mono" }, sa.key_id || "—"),
          h("td", {}, sa.default_tag || "—"),
        );
      }),
    ),
  );
}

function newSubAccountDialog() {
  const name = h("input", { id: "new-sa-name", required: true, maxlength: "200", placeholder: "acme-corp" });
  const cap = h("input", {
    id: "new-sa-cap",
    type: "text",
    inputmode: "decimal",
    autocomplete: "off",
    required: true,
    placeholder: "500.00",
  });
  const rpm = h("input", { id: "new-sa-rpm", type: "number", min: "1", step: "1", placeholder: "no limit" });
  const error = h("p", { class: "form-error", role: "alert" });
  const form = h(
    "form",
    { class: "form" },
    h("label", {}, "Name", name),
    h("label", {}, "Monthly spend cap", cap),
    h("label", {}, "Requests per minute", rpm),
    error,
  );
  modal("New sub-account", form, (close) => {
    const submit = async (e) => {
      e.preventDefault();
      const cents = fmt.parseCents(cap.value);
      if (cents === null) {
        error.textContent = CAP_HINT;
        return;
      }
      const body = { name: name.value.trim(), spend_cap_cents: cents, organization: state.org.id };
      if (rpm.value) body.rate_limit_rpm = Number(rpm.value);
      try {
        const created = await api("/v1/sub-accounts", { method: "POST", body });
        close();
        showSecret(`Sub-account ${created.name} created`, created.key, "its key");
        location.hash = `#/sub-accounts/${encodeURIComponent(created.id)}`;
      } catch (err) {
        error.textContent = err.message;
      }
    };
    form.addEventListener("submit", submit);
    return [
      h("button", { class: "button ghost", type: "button", onclick: close }, "Cancel"),
      h("button", { class: "button primary", type: "button", onclick: submit }, "Create"),
    ];
  });
}

async function subAccountView(id) {
  const view = $("view");
  const mine = generation;
  loading(view);
  const path = `/v1/sub-accounts/${encodeURIComponent(id)}`;
  const filter = { client_id: id, ...orgParams() };
  const figures = h("div", { class: "grid" });
  const requests = requestsCard("Recent requests of this sub-account");
  const panels = {};
  const put = (name, node) => {
    if (panels[name]) panels[name].replaceWith(node);
    else figures.append(node);
    panels[name] = node;
  };
  let shownAccount;
  const load = async () => {
    const params = { ...filter, window: state.window };
    const [account, summary, series, balance] = await Promise.all([
      api(path),
      api("/admin/activity/summary", { params }),
      api("/admin/activity/series", { params: { ...params, bucket: state.bucket } }),
      api("/admin/activity/balance", { params: orgParams() }),
    ]);
    if (mine !== generation) return;
    fmt.setCurrency(balance.currency);
    const limit = balance.limits.find((l) => l.scope_type === "client" && l.scope_id === id);
    const accountChanged = JSON.stringify(account) !== shownAccount;
    shownAccount = JSON.stringify(account);
    if (accountChanged) head.replaceWith((head = subAccountHead(account, load)));
    const month = limit?.spent_this_period
      ? [
          kpi("This month", fmt.money(limit.spent_this_period.amount), `spend in ${balance.period}`),
          kpi(
            "Cap left",
            fmt.money(limit.spend_remaining.amount),
            `of ${fmt.money(limit.spend_limit.amount)} this month`,
            Number(limit.spend_remaining.amount) <= 0 ? "alert" : "",
          ),
        ]
      : [];
    put("kpis", kpis(summary.totals, month));
    put("caps", capsCard(limit ? [limit] : [], { title: "Spend this month against its cap", className: "" }));
    // A poll must not wipe a cap someone is typing.
    if (accountChanged && !panels.limits?.contains(document.activeElement)) put("limits", limitsCard(account, load));
    put("models", modelsCard(summary));
    put("series", seriesCard(series));
    put("blocked", blockedCard(summary, "wide"));
  };
  let head = h("div");
  view.replaceChildren(head, figures, h("div", { class: "grid" }, requests));
  try {
    await load();
  } catch (error) {
    if (mine !== generation) return;
    view.replaceChildren(
      pageHead("Sub-account", id, h("a", { class: "button ghost", href: "#/sub-accounts" }, "All sub-accounts")),
      error.status === 404
        ? empty("There is no such sub-account in this organization.")
        : failure(error, () => route_()),
    );
    return;
  }
  watchRequests(requests, filter, load);
}

function subAccountHead(sa, reload) {
  const path = `/v1/sub-accounts/${encodeURIComponent(sa.id)}`;
  const actions = [h("a", { class: "button ghost", href: "#/sub-accounts" }, "All sub-accounts")];
  if (sa.status !== "revoked") {
    const next = sa.status === "active" ? "suspended" : "active";
    actions.push(
      keyAction(sa.status === "active" ? "Suspend" : "Resume", "ghost", async () => {
        await api(path, { method: "PATCH", body: { status: next } });
        toast(
          next === "active" ? `${sa.name} resumed.` : `${sa.name} suspended: its requests are refused until resumed.`,
        );
        await reload();
      }),
      h(
        "button",
        {
          class: "button danger",
          type: "button",
          onclick: () =>
            confirmDialog(
              `Revoke ${sa.name}?`,
              "Its key is revoked at once and the sub-account disabled. This cannot be undone; its usage and ledger history stay.",
              "Revoke sub-account",
              async () => {
                await api(path, { method: "DELETE" });
                toast(`${sa.name} revoked.`);
                await reload();
              },
            ),
        },
        "Revoke",
      ),
    );
  }
  return h(
    "div",
    { class: "page-head" },
    h(
      "div",
      {},
      h("h1", {}, sa.name, " ", statusBadge(sa.status)),
      h(
        "p",
        { class: "sub" },
        h("span", { class: "mono" }, sa.id),
        ` · key `,
        h("span", { class: "mono" }, sa.key_id || "—"),
        sa.key_status ? ` (${sa.key_status})` : "",
        sa.default_tag ? ` · tag ${sa.default_tag}` : "",
      ),
    ),
    h(
      "div",
      { class: "tools" },
      windowControls(() => route_()),
      actions,
    ),
  );
}

function limitsCard(sa, reload) {
  // Exact: a cap finer than a cent (set through the quota API) shows as it is, and saving it unchanged is
  // refused rather than silently rounded.
  const capNow = sa.spend_cap_nanos === null ? "" : fmt.nanosToAmount(sa.spend_cap_nanos);
  const input = h("input", {
    id: "cap-input",
    type: "text",
    inputmode: "decimal",
    autocomplete: "off",
    value: capNow,
    "aria-label": "Monthly spend cap",
    disabled: sa.status === "revoked",
  });
  const error = h("p", { class: "form-error", role: "alert" });
  const save = h("button", { class: "button primary", type: "submit", disabled: sa.status === "revoked" }, "Save cap");
  const form = h(
    "form",
    {
      class: "cap-form",
      onsubmit: async (e) => {
        e.preventDefault();
        error.textContent = "";
        const cents = fmt.parseCents(input.value);
        if (cents === null) {
          error.textContent = CAP_HINT;
          return;
        }
        save.disabled = true;
        try {
          const updated = await api(`/v1/sub-accounts/${encodeURIComponent(sa.id)}`, {
            method: "PATCH",
            body: { spend_cap_cents: cents },
          });
          const set = fmt.money(fmt.nanosToAmount(updated.spend_cap_nanos));
          toast(`Cap of ${sa.name} set to ${set}: enforced from the next request.`);
          await reload();
        } catch (err) {
          error.textContent = err.message;
          save.disabled = false;
        }
      },
    },
    h("label", { for: "cap-input" }, "Monthly spend cap"),
    h("div", { class: "cap-row" }, h("span", { class: "currency" }, fmt.currencySymbol()), input, save),
    error,
  );
  const dl = h(
    "dl",
    { class: "limits" },
    h("dt", {}, "Requests per minute"),
    h("dd", {}, sa.rate_limit_rpm ? fmt.count(sa.rate_limit_rpm) : "no limit"),
    h("dt", {}, "Tokens per minute"),
    h("dd", {}, sa.tpm ? fmt.count(sa.tpm) : "no limit"),
    h("dt", {}, "Models"),
    h("dd", {}, sa.models ? sa.models.join(", ") : "all priced models"),
    h("dt", {}, "Created"),
    h("dd", {}, fmt.when(sa.created_at)),
  );
  return card("Cap and limits", h("div", {}, form, dl));
}

// ---------------------------------------------------------------- login

function renderLogin(message) {
  $("topbar").hidden = true;
  banner("");
  const input = h("input", {
    id: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "qga-… or your gateway key",
    "aria-label": "Admin token or gateway key",
    required: true,
  });
  const error = h("p", { class: "form-error", role: "alert" }, message || "");
  const submit = h("button", { class: "button primary wide", type: "submit" }, "Sign in");
  const form = h(
    "form",
    {
      class: "login",
      onsubmit: async (e) => {
        e.preventDefault();
        error.textContent = "";
        submit.disabled = true;
        submit.textContent = "Signing in…";
        try {
          await signIn(input.value.trim());
          route_();
        } catch (err) {
          error.textContent = err.status === 0 ? `Cannot sign in: ${err.message}` : err.message;
          submit.disabled = false;
          submit.textContent = "Sign in";
        }
      },
    },
    h(
      "div",
      { class: "login-brand" },
      h("span", { class: "logo" }, "Q"),
      h("div", {}, h("h1", {}, "Quotagate"), h("p", { class: "sub" }, "Spend, usage and blocked requests")),
    ),
    h("label", { for: "token" }, "Admin token or gateway key"),
    input,
    error,
    submit,
    h(
      "p",
      { class: "hint" },
      "An admin token shows your organization; a gateway key shows that key's own usage. It stays in this browser tab and is sent only in the Authorization header. Share a view as ",
      h("code", {}, "/dashboard#token=…"),
      ": the page takes the token out of the address bar.",
    ),
  );
  $("view").replaceChildren(h("div", { class: "login-wrap" }, form));
  input.focus();
}

// ---------------------------------------------------------------- start

async function start() {
  $("sign-out").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", route_);
  document.addEventListener("visibilitychange", () => document.hidden || setLive("ok"));
  const saved = JSON.parse(sessionStorage.getItem(STORE) || "null");
  if (!saved?.token) return renderLogin();
  Object.assign(state, {
    window: saved.window || "24h",
    bucket: saved.bucket || "hour",
    metric: saved.metric || "requests",
  });
  loading($("view"));
  try {
    await signIn(saved.token, saved.org);
    route_();
  } catch (error) {
    if (error.status === 0) renderLogin(`Cannot sign in: ${error.message}`);
    else signOut(error.message);
  }
}

start();
