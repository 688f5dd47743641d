// hybridrec web console: four pages built from the documented API (/openapi.json).
// Every value from the API reaches the page through textContent or DOM properties,
// never parsed as markup, so ids and feature names of any characters show as text.
// The API token (when the server has one) lives in sessionStorage and goes out only
// in the Authorization header of the calls that need it.
"use strict";

const TOKEN_KEY = "hybridrec.token";
const REFRESH_MS = 5000;

// -- DOM helpers ----------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = String(value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function $(id) {
  return document.getElementById(id);
}

function fill(target, ...children) {
  const node = typeof target === "string" ? $(target) : target;
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
  return node;
}

function table(headers, rows, cls) {
  return el(
    "table",
    { class: cls },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
    el("tbody", {}, rows),
  );
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    return value.toFixed(digits);
  }
  return String(value);
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} days`;
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind || text}`, text });
}

function message(target, text, kind = "error") {
  fill(target, el("div", { class: `message ${kind}`, text }));
}

let toastTimer = null;
function toast(text, kind = "info") {
  const node = $("toast");
  node.textContent = text;
  node.className = kind;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (node.hidden = true), 4000);
}

// -- the API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// A header value is bytes; the server reads a non-ASCII token as UTF-8.
function headerValue(text) {
  return Array.from(new TextEncoder().encode(text), (b) => String.fromCharCode(b)).join("");
}

// Path segments: one id each, percent-encoded (the API documents ids of 1..256 characters).
function path(...segments) {
  return segments
    .map((s, n) => (n % 2 === 0 ? s : encodeURIComponent(s)))
    .join("/");
}

async function api(method, url, { query, body, auth = false } = {}) {
  const target = new URL(url, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") {
      target.searchParams.set(name, String(value));
    }
  }
  const headers = { Accept: "application/json" };
  if (auth && token()) headers.Authorization = "Bearer " + headerValue(token());
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(target, init);
  } catch (err) {
    throw new ApiError(0, "unreachable", `the server did not answer (${err.message})`);
  }
  if (!response.ok) {
    let code = `http_${response.status}`;
    let text = response.statusText || "request failed";
    try {
      const data = await response.json();
      code = data.error.code;
      text = data.error.message;
    } catch (_) {
      // not the API's error body (a proxy, or a 414 from the HTTP server)
    }
    throw new ApiError(response.status, code, text);
  }
  if (response.status === 204) return null;
  return response.json();
}

// Runs a call that needs the token; on 401 asks for it once and retries.
async function guarded(call) {
  try {
    return await call();
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) throw err;
    const given = await askToken(err.message);
    if (!given) throw err;
    return call();
  }
}

// Operations that need the token on this server: the document lists the bearer scheme on
// exactly those, and only when the server has a token.
let guardedOps = null;
async function needsToken(method, template) {
  if (guardedOps === null) {
    try {
      const doc = await api("GET", "/openapi.json");
      guardedOps = new Set();
      for (const [route, item] of Object.entries(doc.paths)) {
        for (const [verb, op] of Object.entries(item)) {
          if (op && op.security && op.security.length) guardedOps.add(`${verb.toUpperCase()} ${route}`);
        }
      }
    } catch (_) {
      return true; // unknown: assume it does
    }
  }
  return guardedOps.has(`${method} ${template}`);
}

function explain(err) {
  if (err instanceof ApiError) return `${err.status ? err.status + " " : ""}${err.code}: ${err.message}`;
  return String(err && err.message ? err.message : err);
}

// -- token and confirmation dialogs ------------------------------------------------------

function showTokenState() {
  $("token-state").textContent = token() ? "token set for this tab" : "no token";
}

function askToken(reason) {
  const dialog = $("token-dialog");
  const input = $("token-input");
  input.value = "";
  if (reason) toast(reason, "error");
  return new Promise((resolve) => {
    const done = (value) => {
      cleanup();
      dialog.close();
      showTokenState();
      resolve(value);
    };
    const save = () => {
      if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
      input.value = "";
      done(Boolean(token()));
    };
    const forget = () => {
      sessionStorage.removeItem(TOKEN_KEY);
      done(false);
    };
    const cancel = () => done(false);
    const key = (event) => {
      if (event.key === "Enter") save();
    };
    const cleanup = () => {
      $("token-save").removeEventListener("click", save);
      $("token-forget").removeEventListener("click", forget);
      $("token-cancel").removeEventListener("click", cancel);
      dialog.removeEventListener("cancel", cancel);
      input.removeEventListener("keydown", key);
    };
    $("token-save").addEventListener("click", save);
    $("token-forget").addEventListener("click", forget);
    $("token-cancel").addEventListener("click", cancel);
    dialog.addEventListener("cancel", cancel);
    input.addEventListener("keydown", key);
    dialog.showModal();
    input.focus();
  });
}

function confirmAction(title, text, action) {
  const dialog = $("confirm-dialog");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = action;
  return new Promise((resolve) => {
    const done = (value) => {
      $("confirm-ok").removeEventListener("click", ok);
      $("confirm-cancel").removeEventListener("click", cancel);
      dialog.removeEventListener("cancel", cancel);
      dialog.close();
      resolve(value);
    };
    const ok = () => done(true);
    const cancel = () => done(false);
    $("confirm-ok").addEventListener("click", ok);
    $("confirm-cancel").addEventListener("click", cancel);
    dialog.addEventListener("cancel", cancel);
    dialog.showModal();
  });
}

// -- a small SVG line chart ----------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "text") node.textContent = String(value);
    else node.setAttribute(name, String(value));
  }
  node.append(...children);
  return node;
}

// series: [{name, cls, points: [[t seconds, y or null], ...]}]
function lineChart(series, unit) {
  const width = 560;
  const height = 190;
  const pad = { left: 48, right: 12, top: 12, bottom: 26 };
  const times = series.flatMap((s) => s.points.map((p) => p[0]));
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null));
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "linechart", role: "img" });
  if (all.length === 0) {
    root.append(svg("text", { x: width / 2, y: height / 2, class: "empty", "text-anchor": "middle", text: "no requests yet" }));
    return root;
  }
  const t0 = Math.min(...times);
  const t1 = Math.max(...times, t0 + 1);
  const top = Math.max(...all.map((p) => p[1])) * 1.1 || 1;
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  for (const frac of [0, 0.5, 1]) {
    const v = top * frac;
    root.append(
      svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick", text: `${fmt(v, v < 10 ? 2 : 0)}${unit}` }),
    );
  }
  const span = Math.round(t1 - t0);
  root.append(
    svg("text", { x: pad.left, y: height - 6, class: "tick", text: `${ago(span)} ago` }),
    svg("text", { x: width - pad.right, y: height - 6, "text-anchor": "end", class: "tick", text: "now" }),
  );
  series.forEach((s, n) => {
    let d = "";
    let pen = "M";
    for (const [t, v] of s.points) {
      if (v === null) {
        pen = "M";
        continue;
      }
      d += `${pen}${x(t).toFixed(1)},${y(v).toFixed(1)} `;
      pen = "L";
    }
    root.append(svg("path", { d: d.trim() || "M0,0", class: `series ${s.cls}` }));
    for (const [t, v] of s.points) {
      if (v !== null) root.append(svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: `dot ${s.cls}` }));
    }
    root.append(
      svg("rect", { x: pad.left + 8 + n * 90, y: pad.top, width: 10, height: 10, class: `key ${s.cls}` }),
      svg("text", { x: pad.left + 22 + n * 90, y: pad.top + 9, class: "tick", text: s.name }),
    );
  });
  return root;
}

// -- pages -------------------------------------------------------------------------------

const pages = {};
let refreshTimer = null;

function route() {
  const name = (window.location.hash || "#overview").slice(1);
  const page = pages[name] ? name : "overview";
  for (const section of document.querySelectorAll("section.page")) {
    section.hidden = section.id !== `page-${page}`;
  }
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === page);
  }
  clearInterval(refreshTimer);
  refreshTimer = null;
  pages[page].show();
}

// Overview ------------------------------------------------------------------------------

function card(title, ...lines) {
  return el("div", { class: "card" }, el("h3", { text: title }), lines);
}

function line(label, value, cls) {
  return el("div", { class: "line" }, el("span", { class: "label", text: label }), el("span", { class: cls || "value" }, value));
}

pages.overview = {
  async show() {
    await this.refresh();
    refreshTimer = setInterval(() => this.refresh(), REFRESH_MS);
  },
  async refresh() {
    let model = null;
    let stats = null;
    const alerts = [];
    try {
      stats = await api("GET", "/v1/stats", { query: { minutes: 15 } });
    } catch (err) {
      alerts.push(el("div", { class: "message error", text: `stats: ${explain(err)}` }));
    }
    try {
      model = await api("GET", "/v1/model");
    } catch (err) {
      alerts.push(el("div", { class: "message error", text: `model: ${explain(err)}` }));
    }
    if (stats) {
      if (stats.degraded) {
        alerts.push(el("div", { class: "message error", text: "Degraded: the feature store does not answer; recommendations come from the model alone." }));
      }
      if (stats.registry_version && stats.model_version && stats.registry_version !== stats.model_version) {
        alerts.push(el("div", { class: "message warn", text: `The registry points at ${stats.registry_version} but this worker serves ${stats.model_version} (loading, or the load failed: see reload failures).` }));
      }
      if (stats.reload_failures > 0) {
        alerts.push(el("div", { class: "message warn", text: `${stats.reload_failures} model load(s) failed since the workers started (the server log has each one).` }));
      }
    }
    fill("overview-alerts", alerts);
    const cards = [];
    if (model) {
      cards.push(
        card(
          "Model",
          line("version", el("code", { text: model.model_version })),
          line("trained", model.created_at || "–"),
          line("loaded", `${ago(model.snapshot_age_seconds)} ago`),
          line("components", fmt(model.components)),
        ),
        card("Users and items", line("users in the model", fmt(model.users)), line("recommendable items", fmt(model.items))),
      );
    }
    if (stats) {
      const c = stats.catalog;
      if (c) {
        const updates = Object.entries(c.updates).map(([op, n]) => `${op} ${fmt(n)}`).join(", ") || "none";
        cards.push(
          card(
            "Catalog since training",
            line("trained with", fmt(c.model_items)),
            line("added", fmt(c.added)),
            line("changed", fmt(c.changed)),
            line("not recommendable", fmt(c.unavailable)),
            line("changes applied", updates),
          ),
        );
      }
      cards.push(
        card(
          "Health",
          line("feature store", badge(stats.store, stats.store === "ok" ? "ok" : "bad")),
          line("degraded", badge(stats.degraded ? "yes" : "no", stats.degraded ? "bad" : "ok")),
          line("registry points at", stats.registry_version ? el("code", { text: stats.registry_version }) : "–"),
          line("model loads", `${fmt(stats.reloads)} ok, ${fmt(stats.reload_failures)} failed`),
        ),
      );
      const last = stats.traffic[stats.traffic.length - 1];
      cards.push(
        card(
          "Traffic (last interval)",
          line("requests/s", last ? fmt(last.requests_per_second, 2) : "–"),
          line("p50", last && last.p50_ms !== null ? `${fmt(last.p50_ms, 1)} ms` : "–"),
          line("p99", last && last.p99_ms !== null ? `${fmt(last.p99_ms, 1)} ms` : "–"),
          line("4xx/s, 5xx/s", last ? `${fmt(last.client_errors_per_second, 2)}, ${fmt(last.server_errors_per_second, 2)}` : "–"),
        ),
      );
      const t = stats.traffic;
      fill(
        "chart-rate",
        lineChart(
          [
            { name: "requests", cls: "s1", points: t.map((p) => [p.t, p.requests_per_second]) },
            { name: "5xx", cls: "s3", points: t.map((p) => [p.t, p.server_errors_per_second]) },
          ],
          "",
        ),
      );
      fill(
        "chart-latency",
        lineChart(
          [
            { name: "p50", cls: "s1", points: t.map((p) => [p.t, p.p50_ms]) },
            { name: "p99", cls: "s2", points: t.map((p) => [p.t, p.p99_ms]) },
          ],
          " ms",
        ),
      );
      fill(
        "overview-workers",
        table(
          ["pid", "model version", "items", "snapshot age", "degraded"],
          stats.workers.map((w) =>
            el(
              "tr",
              {},
              el("td", { text: fmt(w.pid) }),
              el("td", {}, el("code", { text: w.model_version || "–" })),
              el("td", { text: fmt(w.catalog_items) }),
              el("td", { text: ago(w.snapshot_age_seconds) }),
              el("td", {}, badge(w.degraded ? "yes" : "no", w.degraded ? "bad" : "ok")),
            ),
          ),
        ),
      );
    }
    fill("overview-cards", cards);
  },
};

// Models --------------------------------------------------------------------------------

function headline(metrics) {
  const all = metrics && metrics.segments && metrics.segments.all;
  if (!all) return "–";
  const k = metrics.k ? `@${metrics.k}` : "";
  return ["precision", "ndcg", "auc"]
    .filter((m) => typeof all[m] === "number")
    .map((m) => `${m}${m === "auc" ? "" : k} ${all[m].toFixed(3)}`)
    .join(" · ");
}

function summary(data) {
  if (!data || typeof data !== "object") return "–";
  return Object.entries(data)
    .filter(([, v]) => v === null || typeof v !== "object")
    .map(([k, v]) => `${k}: ${fmt(v)}`)
    .join(", ");
}

pages.models = {
  async show() {
    await this.refresh();
  },
  async refresh() {
    let data;
    try {
      data = await api("GET", "/v1/models", { query: { limit: 100 } });
    } catch (err) {
      message("models-table", explain(err));
      return;
    }
    const rollback = data.rollback_target
      ? el("button", { type: "button", class: "danger", id: "rollback-button", onclick: () => this.rollback(data.rollback_target) }, `Roll back to ${data.rollback_target}`)
      : el("span", { class: "muted", text: "no earlier version to roll back to" });
    fill(
      "models-summary",
      el("span", {}, "current ", el("code", { text: data.current || "none" })),
      el("span", {}, "this worker serves ", el("code", { text: data.serving || "none" })),
      el("span", { text: `${data.total} version(s)` }),
      rollback,
    );
    const rows = [];
    for (const m of data.versions) {
      const actions = [];
      if (!m.current && m.artifact === "ok") {
        const forced = m.status === "refused";
        actions.push(
          el(
            "button",
            { type: "button", class: forced ? "danger" : "", "data-version": m.version, onclick: () => this.promote(m.version, forced) },
            forced ? "Promote anyway" : "Promote",
          ),
        );
      }
      const details = el("tr", { class: "details", hidden: true }, el("td", { colspan: 6 }, this.details(m)));
      actions.push(el("button", { type: "button", onclick: () => (details.hidden = !details.hidden) }, "Details"));
      rows.push(
        el(
          "tr",
          { class: m.current ? "current" : "" },
          el("td", {}, el("code", { text: m.version }), m.current ? badge("current", "ok") : null),
          el("td", {}, badge(m.status.replace("_", " "), m.status)),
          el("td", { text: m.created_at || "–" }),
          el("td", { text: headline(m.metrics) }),
          el("td", { text: summary(m.training_data) === "–" ? summary(m.sizes) : summary(m.training_data) }),
          el("td", { class: "actions" }, actions),
        ),
        details,
      );
    }
    fill("models-table", table(["version", "status", "trained", "metrics (all users)", "training data", ""], rows, "models"));
  },
  details(m) {
    const parts = [
      el("p", {}, el("strong", { text: "Hyperparameters: " }), summary(m.hyperparameters)),
      el("p", {}, el("strong", { text: "Sizes: " }), summary(m.sizes)),
    ];
    if (m.training_data) parts.push(el("p", {}, el("strong", { text: "Training data: " }), summary(m.training_data)));
    if (m.reasons.length) parts.push(el("p", {}, el("strong", { text: "Quality gate: " }), m.reasons.join("; ")));
    if (m.artifact !== "ok") parts.push(el("p", { class: "message error", text: "The model store has no artifact for this version." }));
    for (const name of m.reports) {
      const url = path("/v1/models", m.version, "reports", name);
      if (/\.png$/i.test(name)) {
        parts.push(el("figure", { class: "report" }, el("img", { src: url, alt: `report ${name} of ${m.version}`, loading: "lazy" }), el("figcaption", { text: name })));
      } else {
        parts.push(el("p", {}, el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: `report: ${name}` })));
      }
    }
    if (!m.reports.length) parts.push(el("p", { class: "muted", text: "No reports (a retraining cycle writes report.json and report.png)." }));
    return parts;
  },
  async promote(version, force) {
    const text = force
      ? `The quality gate refused ${version}. Serve it anyway? Every worker loads it within seconds.`
      : `Serve ${version}? Every worker loads it within seconds; roll back to undo.`;
    if (!(await confirmAction("Promote", text, force ? "Promote anyway" : "Promote"))) return;
    await this.move(() => api("POST", path("/v1/admin/models", version, "promote"), { query: { force: force || undefined }, auth: true }));
  },
  async rollback(target) {
    if (!(await confirmAction("Roll back", `Move the registry back to ${target}? The current version is marked rolled back.`, "Roll back"))) return;
    await this.move(() => api("POST", "/v1/admin/rollback", { query: { expect: target }, auth: true }));
  },
  async move(call) {
    try {
      const moved = await guarded(call);
      const note = moved.reload_error ? ` (this worker: ${moved.reload_error})` : "";
      message("models-message", `Now serving ${moved.model_version} (was ${moved.previous || "none"})${note}.`, "ok");
    } catch (err) {
      message("models-message", explain(err));
    }
    await this.refresh();
  },
};

// Try it --------------------------------------------------------------------------------

function itemRows(items, onSimilar) {
  return items.map((item, n) =>
    el(
      "tr",
      {},
      el("td", { class: "rank", text: n + 1 }),
      el("td", {}, el("code", { class: "item-id", text: item.item_id })),
      el("td", { class: "title", text: item.title || "" }, item.metadata ? el("div", { class: "muted", text: summary(item.metadata) }) : null),
      el("td", { class: "score", text: fmt(item.score, 4) }),
      el("td", {}, el("button", { type: "button", class: "small", onclick: () => onSimilar(item.item_id) }, "similar")),
    ),
  );
}

const picked = new Map(); // feature name -> weight

pages.try = {
  ready: false,
  show() {
    if (this.ready) return;
    this.ready = true;
    const enter = (input, action) => input.addEventListener("keydown", (e) => e.key === "Enter" && action());
    $("try-user-go").addEventListener("click", () => this.user());
    enter($("try-user"), () => this.user());
    $("try-visitor-go").addEventListener("click", () => this.visitor());
    $("try-item-go").addEventListener("click", () => this.similar($("try-item").value));
    enter($("try-item"), () => this.similar($("try-item").value));
    let pending = null;
    $("try-vocab-q").addEventListener("input", () => {
      clearTimeout(pending);
      pending = setTimeout(() => this.vocabulary(), 200);
    });
    this.vocabulary();
    this.showPicked();
  },
  options() {
    const k = Math.max(1, Math.min(1000, parseInt($("try-k").value, 10) || 10));
    return { k, exact: $("try-exact").checked, exclude_seen: $("try-exclude-seen").checked };
  },
  showAnswer(answer) {
    fill(
      "try-meta",
      el("span", {}, "strategy ", badge(answer.strategy, "info")),
      el("span", {}, "user case ", badge(answer.user_case.replaceAll("_", " "), "info")),
      el("span", {}, "retrieval ", badge(answer.retrieval, "info")),
      answer.degraded ? badge("degraded", "bad") : null,
      el("span", {}, "model ", el("code", { text: answer.model_version })),
      answer.score_type ? el("span", { class: "muted", text: `scores: ${answer.score_type}` }) : null,
    );
    fill(
      "try-results",
      answer.items.length
        ? table(["#", "item", "title", "score", ""], itemRows(answer.items, (id) => this.similar(id)), "items results")
        : el("p", { class: "muted", text: "No items." }),
    );
  },
  async user() {
    const id = $("try-user").value;
    if (!id) return;
    const o = this.options();
    try {
      const answer = await api("GET", path("/v1/users", id, "recommendations"), { query: { k: o.k, exact: o.exact, exclude_seen: o.exclude_seen } });
      this.showAnswer(answer);
    } catch (err) {
      fill("try-meta");
      message("try-results", explain(err));
    }
    this.seen(id);
  },
  async visitor() {
    const o = this.options();
    const features = Object.fromEntries(picked);
    try {
      const answer = await api("POST", "/v1/recommendations", { body: { features, k: o.k, exact: o.exact } });
      this.showAnswer(answer);
    } catch (err) {
      fill("try-meta");
      message("try-results", explain(err));
    }
    fill("try-seen", el("p", { class: "muted", text: "A new visitor has seen nothing." }));
  },
  async seen(id) {
    if (!token() && (await needsToken("GET", "/v1/users/{user_id}/seen"))) {
      const ask = el("button", { type: "button", onclick: async () => (await askToken()) && this.seen(id) }, "Enter the API token");
      fill("try-seen", el("div", { class: "message warn", text: "A user's seen items are their data: this server needs the API token for them." }), ask);
      return;
    }
    try {
      const seen = await api("GET", path("/v1/users", id, "seen"), { query: { limit: 50 }, auth: true });
      fill(
        "try-seen",
        el("p", { class: "muted", text: `${fmt(seen.count)} item(s)${seen.count > seen.items.length ? `, the first ${seen.items.length} by id` : ""}` }),
        el("ul", { class: "seen" }, seen.items.map((i) => el("li", {}, el("code", { class: "item-id", text: i.item_id }), i.title ? ` ${i.title}` : ""))),
      );
    } catch (err) {
      if (err.status !== 401) {
        message("try-seen", explain(err));
        return;
      }
      // a user's data: asked for only when the person wants to see it
      const ask = el("button", { type: "button", onclick: async () => (await askToken()) && this.seen(id) }, "Enter the API token");
      fill("try-seen", el("div", { class: "message warn", text: `A user's seen items need the API token. ${err.message}` }), ask);
    }
  },
  async similar(id) {
    if (!id) return;
    $("try-item").value = id;
    const { k } = this.options();
    try {
      const answer = await api("GET", path("/v1/items", id, "similar"), { query: { k } });
      fill(
        "try-similar-meta",
        el("span", {}, "like ", el("code", { class: "item-id", text: answer.item_id }), answer.title ? ` ${answer.title}` : ""),
        el("span", {}, "model ", el("code", { text: answer.model_version })),
      );
      fill("try-similar", table(["#", "item", "title", "cosine", ""], itemRows(answer.items, (other) => this.similar(other)), "items similar"));
    } catch (err) {
      fill("try-similar-meta");
      message("try-similar", explain(err));
    }
  },
  async vocabulary() {
    const q = $("try-vocab-q").value;
    try {
      const vocab = await api("GET", "/v1/model/features", { query: { side: "user", q, limit: 60 } });
      const chips = vocab.features.map((name) =>
        el("button", { type: "button", class: picked.has(name) ? "chip on" : "chip", onclick: () => this.pick(name) }, name),
      );
      const more = vocab.matched > vocab.features.length ? el("span", { class: "muted", text: ` … ${vocab.matched - vocab.features.length} more: type to narrow` }) : null;
      fill("try-vocab", vocab.total ? chips : el("span", { class: "muted", text: "The model has no user features." }), more);
    } catch (err) {
      message("try-vocab", explain(err));
    }
  },
  pick(name) {
    if (picked.has(name)) picked.delete(name);
    else picked.set(name, 1);
    this.showPicked();
    this.vocabulary();
  },
  showPicked() {
    const chips = [...picked.keys()].map((name) => el("button", { type: "button", class: "chip on", title: "remove", onclick: () => this.pick(name) }, name, " ×"));
    fill("try-picked", chips.length ? [el("span", { class: "muted", text: "visitor: " }), chips] : el("span", { class: "muted", text: "No features picked: the visitor gets the popular items." }));
  },
};

// Catalog -------------------------------------------------------------------------------

pages.catalog = {
  ready: false,
  current: null,
  show() {
    if (this.ready) return;
    this.ready = true;
    $("catalog-search").addEventListener("click", () => this.search());
    $("catalog-open").addEventListener("click", () => this.open($("catalog-q").value));
    $("catalog-q").addEventListener("keydown", (e) => e.key === "Enter" && this.search());
  },
  async search() {
    const q = $("catalog-q").value;
    if (!q) return;
    try {
      const found = await api("GET", "/v1/items", { query: { q, limit: 50 } });
      const rows = found.items.map((item) =>
        el(
          "tr",
          {},
          el("td", {}, el("code", { class: "item-id", text: item.item_id })),
          el("td", { class: "title", text: item.title || "" }),
          el("td", {}, badge(item.recommendable ? "yes" : "no", item.recommendable ? "ok" : "bad")),
          el("td", {}, badge(item.in_model ? "yes" : "no", item.in_model ? "ok" : "info")),
          el("td", {}, el("button", { type: "button", class: "small", onclick: () => this.open(item.item_id) }, "open")),
        ),
      );
      fill(
        "catalog-results",
        rows.length ? table(["item", "title", "recommendable", "in model", ""], rows, "items found") : el("p", { class: "muted", text: "Nothing found: 'Open this id' creates it." }),
        found.truncated ? el("p", { class: "muted", text: "More items match: refine the search." }) : null,
      );
    } catch (err) {
      message("catalog-results", explain(err));
    }
  },
  async status(id) {
    return api("GET", path("/v1/items", id));
  },
  async open(id) {
    if (!id) return;
    this.current = id;
    try {
      this.render(await this.status(id));
    } catch (err) {
      message("catalog-item", explain(err));
    }
  },
  render(item, note) {
    const rows = el("tbody", {});
    const addRow = (name, weight) => {
      const row = el(
        "tr",
        {},
        el("td", {}, el("input", { type: "text", class: "feature-name", maxlength: 256, value: name, list: "item-vocab" })),
        el("td", {}, el("input", { type: "number", class: "feature-weight", min: 0, step: "any", value: weight })),
        el("td", {}, el("button", { type: "button", class: "small", onclick: () => row.remove() }, "remove")),
      );
      rows.append(row);
    };
    for (const [name, weight] of Object.entries(item.features || {})) addRow(name, weight);
    const vocab = el("datalist", { id: "item-vocab" });
    api("GET", "/v1/model/features", { query: { side: "item", limit: 500 } })
      .then((v) => vocab.replaceChildren(...v.features.map((f) => el("option", { value: f }))))
      .catch(() => {});
    fill(
      "catalog-item",
      el("h2", {}, el("code", { class: "item-id", text: item.item_id }), item.title ? ` ${item.title}` : ""),
      el(
        "div",
        { class: "meta", id: "item-status" },
        el("span", {}, "recommendable ", badge(item.recommendable ? "yes" : "no", item.recommendable ? "ok" : "bad")),
        el("span", {}, "in model ", badge(item.in_model ? "yes" : "no", item.in_model ? "ok" : "info")),
        el("span", {}, "in catalog ", badge(item.in_catalog ? "yes" : "no", item.in_catalog ? "ok" : "info")),
        el("span", { text: `features the model knows: ${item.known_features}, ignored: ${item.unknown_features}` }),
      ),
      note ? el("div", { class: "message ok", text: note }) : null,
      item.metadata ? el("p", { class: "muted", text: summary(item.metadata) }) : null,
      el("table", { class: "features" }, el("thead", {}, el("tr", {}, el("th", { text: "feature" }), el("th", { text: "weight" }), el("th"))), rows),
      vocab,
      el(
        "div",
        { class: "row" },
        el("button", { type: "button", onclick: () => addRow("", 1) }, "Add a feature"),
        el("button", { type: "button", class: "primary", id: "item-save", onclick: () => this.save(item.item_id, rows) }, "Save features"),
        item.in_catalog ? el("button", { type: "button", class: "danger", id: "item-delete", onclick: () => this.remove(item.item_id) }, "Delete item") : null,
        el("button", { type: "button", onclick: () => this.similar(item.item_id) }, "Similar items"),
      ),
      el("div", { id: "item-message" }),
    );
  },
  similar(id) {
    window.location.hash = "#try";
    pages.try.similar(id);
  },
  async save(id, rows) {
    const features = {};
    for (const row of rows.querySelectorAll("tr")) {
      const name = row.querySelector(".feature-name").value;
      const weight = Number(row.querySelector(".feature-weight").value);
      if (name) features[name] = Number.isFinite(weight) ? weight : 1;
    }
    let stored;
    try {
      stored = await guarded(() => api("PUT", path("/v1/items", id, "features"), { body: { features }, auth: true }));
    } catch (err) {
      message("item-message", explain(err));
      return;
    }
    const ignored = stored.unknown_features ? ` (${stored.unknown_features} name(s) the model does not know: stored, ignored in scoring)` : "";
    await this.watch(id, `Saved${ignored}.`);
  },
  async remove(id) {
    if (!(await confirmAction("Delete item", `Delete the features of ${id}? It stops being recommended within a second.`, "Delete"))) return;
    try {
      await guarded(() => api("DELETE", path("/v1/items", id, "features"), { auth: true }));
    } catch (err) {
      message("item-message", explain(err));
      return;
    }
    await this.watch(id, "Deleted.");
  },
  // Polls the item's status until it is recommendable (or not, after a delete).
  async watch(id, note) {
    const started = performance.now();
    let item = await this.status(id);
    const want = item.in_catalog && item.known_features > 0;
    while (item.recommendable !== want && performance.now() - started < 10000) {
      await new Promise((r) => setTimeout(r, 250));
      item = await this.status(id);
    }
    const took = ((performance.now() - started) / 1000).toFixed(1);
    const state = item.recommendable ? `recommendable after ${took} s` : want ? "not recommendable yet" : "not recommendable";
    if (this.current === id) this.render(item, `${note} ${state}.`);
  },
};

// -- start --------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("token-button").addEventListener("click", () => askToken());
  showTokenState();
  window.addEventListener("hashchange", route);
  route();
});
