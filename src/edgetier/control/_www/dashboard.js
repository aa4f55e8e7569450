// EdgeTier fleet dashboard: reads the controller's JSON API every REFRESH_S seconds with
// the operator token (kept in this tab's sessionStorage only) and draws nodes by tier,
// deployments, rollouts and the event log. Every value from the API goes into the page
// as text (textContent), never as HTML.
"use strict";

const DEFAULT_REFRESH_S = 2; // edgetier.control._dashboard.DEFAULT_REFRESH_S
const TIERS = ["terminal", "edge", "region", "cloud"];
const EVENTS_SHOWN = 60;
const TOKEN_KEY = "edgetier.operator-token";
const HOT_MARGIN_C = 5; // the scheduler's thermal filter: within 5 degC of the limit
const COMPACT_OVER = 24; // a tier with more nodes draws each as a small square

const REFRESH_S = (() => {
  const asked = Number(new URLSearchParams(location.search).get("refresh_s"));
  return Number.isFinite(asked) && asked > 0 ? Math.min(60, Math.max(0.5, asked)) : DEFAULT_REFRESH_S;
})();

const $ = (id) => document.getElementById(id);
let timer = null;
// the controller's clock minus this browser's, from the Date header (whole seconds, so a
// difference under 2 s is taken for none)
let skewMs = 0;
let generation = 0; // bumped on sign-out so that a late answer draws nothing

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, token) {
  const answer = await fetch(path, {
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
    cache: "no-store",
  });
  const date = Date.parse(answer.headers.get("date") || "");
  if (Number.isFinite(date)) skewMs = Math.abs(date - Date.now()) < 2000 ? 0 : date - Date.now();
  if (!answer.ok) {
    let message = `${answer.status} ${answer.statusText}`;
    try {
      message = (await answer.json()).error || message;
    } catch (_) { /* not JSON */ }
    throw new ApiError(answer.status, message);
  }
  return answer.json();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "width") node.style.width = value; // CSSOM: allowed by the page's CSP
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function conditionTrue(conditions, type) {
  return (conditions || []).find((c) => c.type === type && c.status === "True");
}

function clock(time) {
  return new Date(time).toLocaleTimeString([], { hourCycle: "h23" });
}

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.max(0, (Date.now() + skewMs - Date.parse(iso)) / 1000);
  if (seconds < 90) return `${seconds.toFixed(0)} s ago`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

// -- nodes --------------------------------------------------------------------------

function nodeHealth(node) {
  const conditions = node.status.conditions || [];
  const offline = conditionTrue(conditions, "Offline");
  if (offline) return { state: "offline", label: "Offline", why: offline.message || offline.reason };
  for (const type of ["Degraded", "Throttled"]) {
    const c = conditionTrue(conditions, type);
    if (c) return { state: "warn", label: type, why: c.message || c.reason };
  }
  const ready = conditions.find((c) => c.type === "Ready");
  if (ready && ready.status !== "True") {
    return { state: "warn", label: "Not ready", why: ready.message || ready.reason };
  }
  if (node.spec.unschedulable) return { state: "drained", label: "Drained", why: "unschedulable" };
  return { state: "ok", label: "Ready", why: "" };
}

function figure(value, digits, unit) {
  return value === null || value === undefined ? "n/a" : `${Number(value).toFixed(digits)} ${unit}`;
}

function nodeTile(node) {
  const health = nodeHealth(node);
  const t = node.status.telemetry || {};
  const limit = (node.spec.capacity || {}).thermal_limit_c;
  const budget = (node.spec.capacity || {}).power_budget_w;
  const utilisation = t.utilisation === null || t.utilisation === undefined ? null : t.utilisation;
  const meter = el("div", { class: "meter" },
    el("span", { width: `${utilisation === null ? 0 : Math.round(utilisation * 100)}%` }));
  const temperature = el("dd", {
    class: limit && t.temperature_c != null && t.temperature_c >= limit - HOT_MARGIN_C ? "hot" : "",
    text: figure(t.temperature_c, 1, "°C") + (limit ? ` / ${limit} °C` : ""),
  });
  const placed = node.status.placements || [];
  return el("article", {
    class: `node-tile health-${health.state}`,
    "data-node": node.metadata.name,
    "data-health": health.state,
    title: health.why || health.label,
  },
    el("div", { class: "name", text: node.metadata.name }),
    el("div", { class: "profile", text: node.spec.profile + (t.simulated ? " (simulated)" : "") }),
    el("div", { class: "health", text: health.label }),
    el("div", { class: "why", text: health.why || (placed.length ? placed.join(", ") : "nothing placed") }),
    el("dl", {},
      el("dt", { text: "Utilisation" }),
      el("dd", {}, utilisation === null ? "n/a" : `${(utilisation * 100).toFixed(0)} %`, meter),
      el("dt", { text: "Power" }),
      el("dd", { class: "power", text: figure(t.power_w, 1, "W") + (budget ? ` / ${budget} W` : "") }),
      el("dt", { text: "Temperature" }),
      temperature,
      el("dt", { text: "Heartbeat" }),
      el("dd", { text: ago(node.status.last_heartbeat) }),
    ),
  );
}

// A large tier: one coloured square per node, its figures in the tooltip.
function nodeSquare(node) {
  const health = nodeHealth(node);
  const t = node.status.telemetry || {};
  const lines = [
    `${node.metadata.name} (${node.spec.profile}): ${health.label}`,
    health.why,
    `utilisation ${t.utilisation == null ? "n/a" : `${(t.utilisation * 100).toFixed(0)} %`}, ` +
      `power ${figure(t.power_w, 1, "W")}, temperature ${figure(t.temperature_c, 1, "°C")}`,
    `heartbeat ${ago(node.status.last_heartbeat)}`,
  ];
  return el("span", {
    class: `node-tile compact health-${health.state}`,
    "data-node": node.metadata.name,
    "data-health": health.state,
    title: lines.filter(Boolean).join("\n"),
  });
}

function drawNodes(nodes) {
  const tiers = $("tiers");
  const sections = [];
  const known = new Set(TIERS);
  const order = [...TIERS, ...new Set(nodes.map((n) => n.spec.tier).filter((t) => !known.has(t)))];
  for (const tier of order) {
    const members = nodes.filter((n) => n.spec.tier === tier);
    if (!members.length) continue;
    const down = members.filter((n) => nodeHealth(n).state === "offline").length;
    const compact = members.length > COMPACT_OVER;
    sections.push(el("section", { class: "tier", "data-tier": tier, id: `tier-${tier}` },
      el("h3", { text: `${tier} · ${members.length} node${members.length === 1 ? "" : "s"}` +
        (down ? ` · ${down} offline` : "") + (compact ? " · hover a square for its figures" : "") }),
      el("div", { class: compact ? "tier-nodes compact" : "tier-nodes" },
        ...members.map(compact ? nodeSquare : nodeTile))));
  }
  if (!sections.length) sections.push(el("p", { class: "muted", text: "No nodes enrolled yet." }));
  tiers.replaceChildren(...sections);
}

function drawSummary(nodes, deployments) {
  const count = (state) => nodes.filter((n) => nodeHealth(n).state === state).length;
  const power = nodes.reduce((sum, n) => sum + ((n.status.telemetry || {}).power_w || 0), 0);
  const stat = (label, value, id) => el("div", { class: "stat", id }, el("b", { text: value }), label);
  $("summary").replaceChildren(
    stat("nodes", String(nodes.length), "stat-nodes"),
    stat("ready", String(count("ok")), "stat-ready"),
    stat("warning", String(count("warn")), "stat-warn"),
    stat("offline", String(count("offline")), "stat-offline"),
    stat("deployments", String(deployments.length), "stat-deployments"),
    stat("fleet power", `${power.toFixed(0)} W`, "stat-power"),
  );
}

// -- deployments, rollouts, events ----------------------------------------------------

function badge(text, kind, title) {
  return el("span", { class: `badge ${kind}`, text, title });
}

function deploymentRow(d) {
  const spec = d.spec;
  const runs = spec.pipeline
    ? `pipeline ${spec.pipeline.name}` + (spec.pipeline.model ? ` (${spec.pipeline.model.name})` : "")
    : `model ${spec.model ? spec.model.name : "?"}`;
  const placements = d.status.placements || [];
  const nodes = [...new Set(placements.map((p) => p.node))];
  const streams = placements.reduce((sum, p) => sum + (p.streams || 0), 0);
  const conditions = d.status.conditions || [];
  const state = el("td");
  const ready = conditions.find((c) => c.type === "Ready");
  state.append(ready && ready.status === "True"
    ? badge("Ready", "ok", ready.message) : badge("Not ready", "warn", ready ? ready.message : ""));
  const progressing = conditionTrue(conditions, "Progressing");
  if (progressing) state.append(badge("Progressing", "info", progressing.message));
  const degraded = conditionTrue(conditions, "Degraded");
  if (degraded) state.append(badge(`Degraded: ${degraded.reason}`, "bad", degraded.message));
  return el("tr", { "data-deployment": d.metadata.name },
    el("td", { text: d.metadata.name }),
    el("td", { text: runs }),
    el("td", { text: nodes.length ? nodes.join(", ") + ` · ${placements.length} replica` +
      (placements.length === 1 ? "" : "s") + (streams ? ` · ${streams} streams` : "") : "nowhere" }),
    el("td", { text: `${d.status.observedGeneration ?? "?"} / ${d.metadata.generation}` }),
    state);
}

function drawDeployments(deployments) {
  $("deployments").tBodies[0].replaceChildren(...deployments.map(deploymentRow));
  $("deployments").hidden = !deployments.length;
  $("no-deployments").hidden = deployments.length > 0;
}

function rolloutBlock(r) {
  const total = r.nodes_total || 0;
  const done = r.nodes_updated || 0;
  const percent = total ? Math.round((100 * done) / total) : 0;
  const kind = { Succeeded: "ok", Progressing: "info", Paused: "warn" }[r.state] || "bad";
  return el("div", { class: `rollout state-${String(r.state).toLowerCase()}`, "data-rollout": r.deployment },
    el("div", {},
      el("b", { text: r.deployment }), " ",
      badge(r.state, kind),
      el("span", { class: "muted", text: ` revision ${r.from_revision} → ${r.to_revision}` })),
    el("div", { class: "progress", title: `${percent} %` }, el("span", { width: `${percent}%` })),
    el("div", { class: "muted", text: `batch ${r.batch} of ${r.batches} · ${done} of ${total} nodes updated · ` +
      `updated ${ago(r.updated_at)}` }),
    r.message ? el("div", { text: r.message }) : null);
}

function drawRollouts(rollouts) {
  // null: the controller has no rollout API (404), which means no rollouts either
  const list = rollouts || [];
  $("rollouts").replaceChildren(...list.map(rolloutBlock));
  $("no-rollouts").hidden = list.length > 0;
}

function eventDetails(e) {
  const data = e.data || {};
  if (typeof data.message === "string") return data.message;
  const text = JSON.stringify(data);
  return text === "{}" ? "" : text;
}

function drawEvents(events) {
  const rows = events.slice().reverse().map((e) => el("tr", { "data-event": String(e.id) },
    el("td", { text: clock(e.time), title: e.time }),
    el("td", { text: e.source }),
    el("td", { text: e.kind }),
    el("td", { text: e.subject || "" }),
    el("td", { class: "details", text: eventDetails(e), title: eventDetails(e) })));
  $("events").tBodies[0].replaceChildren(...rows);
  $("events").hidden = !rows.length;
  $("no-events").hidden = rows.length > 0;
}

// -- the refresh loop and the session ---------------------------------------------------

async function rolloutsOrNone(token) {
  try {
    const answer = await api("/v1/rollouts", token);
    return Array.isArray(answer) ? answer : (answer && (answer.rollouts || answer.items)) || [];
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

async function refresh() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const mine = generation;
  if (!token) return;
  try {
    const [nodes, deployments, rollouts, events] = await Promise.all([
      api("/v1/nodes", token),
      api("/v1/deployments", token),
      rolloutsOrNone(token),
      api(`/v1/events?newest=true&limit=${EVENTS_SHOWN}`, token),
    ]);
    if (mine !== generation) return;
    drawSummary(nodes, deployments);
    drawNodes(nodes);
    drawDeployments(deployments);
    drawRollouts(rollouts);
    drawEvents(events);
    $("banner").hidden = true;
    $("status").textContent = `updated ${clock(Date.now())} · every ${REFRESH_S} s`;
    document.body.dataset.updated = String(Date.now());
  } catch (error) {
    if (mine !== generation) return;
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      signOut(`The controller no longer accepts this token: ${error.message}`);
      return;
    }
    $("banner").textContent = `Cannot read the controller (${error.message}); ` +
      `showing what it last said, retrying every ${REFRESH_S} s.`;
    $("banner").hidden = false;
  }
  if (mine === generation) timer = setTimeout(refresh, REFRESH_S * 1000);
}

async function controllerInfo() {
  try {
    const health = await (await fetch("/healthz", { cache: "no-store" })).json();
    const role = health.role ? ` · ${health.role}${health.replica ? ` ${health.replica}` : ""}` : "";
    $("controller").textContent = `${location.host} · v${health.version}${role}`;
  } catch (_) {
    $("controller").textContent = location.host;
  }
}

function showDashboard() {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
  controllerInfo();
  refresh();
}

function signOut(message) {
  generation += 1;
  clearTimeout(timer);
  sessionStorage.removeItem(TOKEN_KEY);
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  $("status").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("login-error").hidden = !message;
  $("token").value = "";
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  $("login-error").hidden = true;
  if (!/^[\x21-\x7e]+$/.test(token)) { // a header carries printable ASCII only
    $("login-error").textContent = "A token is printable ASCII without spaces (eto_<id>.<secret>)";
    $("login-error").hidden = false;
    return;
  }
  try {
    await api("/v1/nodes", token); // the API decides: 401 unknown/expired, 403 not an operator's
  } catch (error) {
    const why = error instanceof ApiError
      ? (error.status === 403 ? "This is not an operator token" : "The controller refused this token")
      : "Cannot reach the controller";
    $("login-error").textContent = `${why}: ${error.message}`;
    $("login-error").hidden = false;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  generation += 1;
  showDashboard();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", signIn);
  $("logout").addEventListener("click", () => signOut(""));
  if (sessionStorage.getItem(TOKEN_KEY)) showDashboard();
  else signOut("");
});
