// aviary dashboard: our own small script, no framework, no third-party code.
// Views: #/ (the rollouts) and #/rollouts/NAME (one rollout, live over Server-Sent Events).
"use strict";

const state = { session: null, source: null, name: null, rollout: null, series: {} };

// el("div", {class: "x"}, child, "text") — text always goes in as text, never as HTML.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, options) {
  const res = await fetch(path, options);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const leader = body.leader ? " (leader: " + body.leader + ")" : "";
    const e = new Error((body.error || res.statusText) + leader);
    e.status = res.status;
    throw e;
  }
  return body;
}

function badge(phase) {
  return el("span", { class: "badge " + phase, "data-phase": phase }, phase || "—");
}

function time(ts) {
  return ts ? new Date(ts).toLocaleTimeString() : "";
}

function showReplica(leading, leader) {
  const r = document.getElementById("replica");
  r.className = "replica" + (leading ? "" : " follower");
  r.textContent = leading ? "leader" : "follower" + (leader ? " · leader " + leader : "");
}

function showSession(s) {
  state.session = s;
  document.getElementById("who").textContent = s.caller.name + " · " + s.caller.role;
  const out = document.getElementById("signout");
  out.hidden = !s.signedIn;
  showReplica(s.leading, s.leader);
}

async function loadSession() {
  showSession(await api("/api/session"));
}

// Behind TLS a request names its caller by a client certificate or a bearer token; a browser
// without a certificate signs in with a token of the coordinator's token file, which the
// coordinator keeps in an HttpOnly cookie.
function showSignIn(message) {
  const input = el("input", { id: "token", type: "password", autocomplete: "off", placeholder: "bearer token", size: 40 });
  const submit = (ev) => {
    ev.preventDefault();
    api("/api/session", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: input.value }),
    }).then((s) => { showSession(s); showError(""); route(); }, (e) => showError("sign in: " + e.message));
  };
  document.getElementById("main").replaceChildren(
    el("h1", {}, "Sign in"),
    el("p", { class: "meta" }, message),
    el("p", { class: "meta" }, "Use a client certificate signed by the coordinator's client CA, or a bearer token from its token file."),
    el("form", { id: "signin", onsubmit: submit }, input, " ", el("button", { type: "submit", class: "primary" }, "Sign in")));
}

function signOut() {
  api("/api/session", { method: "DELETE" }).finally(() => { state.session = null; location.hash = "#/"; location.reload(); });
}

// ---- the list ----

async function showList() {
  const main = document.getElementById("main");
  const { rollouts = [] } = await api("/api/rollouts");
  main.replaceChildren(
    el("h1", {}, "Rollouts"),
    rollouts.length === 0
      ? el("p", { class: "meta" }, "No rollouts yet: aviary rollout create -f fleetrollout.yaml")
      : el("table", { class: "list", id: "rollouts" },
          el("tr", {}, ["Rollout", "Phase", "Canary", "Version", "Waves", "Created"].map((h) => el("th", {}, h))),
          rollouts.map((r) => el("tr", { "data-rollout": r.name },
            el("td", {}, el("a", { href: "#/rollouts/" + encodeURIComponent(r.name) }, r.name)),
            el("td", {}, badge(r.phase)),
            el("td", {}, r.canary ? r.canary.namespace + "/" + r.canary.name : ""),
            el("td", {}, r.revision ? r.revision.version : ""),
            el("td", {}, r.waves.filter((w) => w.phase === "Succeeded").length + "/" + r.waves.length),
            el("td", {}, time(r.created))))));
}

// ---- one rollout ----

function watch(name) {
  state.name = name;
  state.rollout = null;
  state.series = {};
  const src = new EventSource("/api/rollouts/" + encodeURIComponent(name) + "/events");
  state.source = src;
  src.addEventListener("rollout", (e) => { state.rollout = JSON.parse(e.data); record(state.rollout); render(); });
  src.addEventListener("replica", (e) => { const r = JSON.parse(e.data); showReplica(r.leading, r.leader); });
  src.addEventListener("problem", (e) => showError(JSON.parse(e.data).error));
  src.addEventListener("end", () => src.close());
  // EventSource reconnects by itself when a connection drops; when it gives up (the replica
  // refused or is gone), open a new one a little later.
  src.onerror = () => {
    if (src.readyState === EventSource.CLOSED && state.source === src) {
      setTimeout(() => { if (state.source === src && state.name === name) watch(name); }, 2000);
    }
  };
}

function stopWatching() {
  if (state.source) state.source.close();
  state.source = null;
  state.name = null;
}

const SUCCESS = /success/i;

// Charts: a sample per cluster whenever its weight or success rate changes, seeded from the
// metric values recorded in the history (what happened before the page opened).
function record(r) {
  const add = (cluster, t, weight, success) => {
    const s = (state.series[cluster] = state.series[cluster] || []);
    const last = s[s.length - 1];
    if (last && last.weight === weight && last.success === success) return;
    s.push({ t: Date.parse(t) || Date.now(), weight, success });
  };
  if (Object.keys(state.series).length === 0) {
    for (const h of r.history || []) {
      const v = Object.entries(h.metrics || {}).find(([k]) => SUCCESS.test(k));
      if (h.cluster && v) add(h.cluster, h.time, null, v[1]);
    }
  }
  for (const w of r.waves) for (const c of w.clusters) {
    if (c.phase === "Pending" && !c.started) continue;
    const v = Object.entries(c.metrics || {}).find(([k]) => SUCCESS.test(k));
    add(c.cluster, new Date().toISOString(), c.canaryWeight, v ? v[1] : null);
  }
}

function act(action, body, confirmText) {
  if (confirmText && !window.confirm(confirmText)) return;
  showError("");
  api("/api/rollouts/" + encodeURIComponent(state.name) + "/" + action, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body || {}),
  }).then((r) => { state.rollout = r; record(r); render(); }, (e) => showError(action + ": " + e.message));
}

function button(label, action, body, extra) {
  if (!state.session || !state.session.canAct) return null;
  // Abort needs the admin role, as on the gRPC API.
  if (action === "abort" && state.session.caller.role !== "admin") return null;
  return el("button", Object.assign({ "data-action": action, onclick: () => act(action, body, extra && extra.confirm) },
    extra && extra.attrs), label);
}

function cell(r, w, c) {
  const over = ["Succeeded", "Failed", "Aborted"].includes(r.phase);
  const metrics = Object.entries(c.metrics || {}).map(([k, v]) =>
    el("div", { class: "small" + (c.phase === "Failed" ? " failing" : "") }, k + " " + Number(v).toFixed(1)));
  return el("div", { class: "cell " + c.phase + (c.connected ? "" : " disconnected"), "data-cluster": c.cluster, "data-phase": c.phase },
    el("div", { class: "name" }, c.cluster),
    el("div", { class: "small" }, c.region + " · " + c.phase + (c.connected ? "" : " · disconnected")),
    el("div", { class: "small" }, "weight " + c.canaryWeight + "% · failed checks " + c.failedChecks),
    metrics,
    // The verdict without the values listed above it.
    c.verdict ? el("div", { class: "small" }, c.verdict.split(" (")[0]) : null,
    over ? null : el("div", {},
      ["Pending", "Starting", "Progressing"].includes(c.phase)
        ? button("Skip", "skip", { cluster: c.cluster }, { attrs: { "data-cluster": c.cluster } }) : null,
      c.phase === "Failed"
        ? button("Retry", "retry", { cluster: c.cluster }, { attrs: { "data-cluster": c.cluster } }) : null));
}

function waveColumn(r, w) {
  const approve = w.phase === "WaitingApproval" || (w.manualApproval && !w.approvedBy && w.phase === "Pending");
  return el("div", { class: "wave", "data-wave": w.name, "data-phase": w.phase },
    el("div", { class: "head" }, el("strong", {}, w.name), badge(w.phase)),
    el("div", { class: "small meta" },
      "max " + w.maxConcurrent + (w.mandatory ? " · mandatory" : "") +
      (w.bakeDuration ? " · bake " + w.bakeDuration + " (" + w.bakeRequests + "/" + w.bakeMinRequests + " req)" : "") +
      (w.approvedBy ? " · approved by " + w.approvedBy : "")),
    approve ? button("Approve", "approve", { wave: w.name }, { attrs: { class: "primary", "data-wave": w.name } }) : null,
    w.clusters.map((c) => cell(r, w, c)));
}

// A line chart in SVG: weight (0–100%, solid) and success rate (0–100%, dashed).
function chart(cluster, samples) {
  const W = 260, H = 90, P = 4;
  const t0 = samples[0].t, t1 = Math.max(samples[samples.length - 1].t, t0 + 1000);
  const x = (t) => P + ((t - t0) / (t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P - (Math.max(0, Math.min(100, v)) / 100) * (H - 2 * P);
  // Steps: a value holds until the next sample.
  const path = (key) => {
    const pts = samples.filter((s) => s[key] !== null && s[key] !== undefined);
    if (pts.length === 0) return "";
    let d = "M" + x(pts[0].t).toFixed(1) + " " + y(pts[0][key]).toFixed(1);
    for (const s of pts.slice(1)) d += " H" + x(s.t).toFixed(1) + " V" + y(s[key]).toFixed(1);
    return d + " H" + x(t1).toFixed(1);
  };
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  const line = (d, color, dash) => {
    if (!d) return;
    const p = document.createElementNS(ns, "path");
    p.setAttribute("d", d); p.setAttribute("fill", "none"); p.setAttribute("stroke", color); p.setAttribute("stroke-width", "2");
    if (dash) p.setAttribute("stroke-dasharray", "4 3");
    svg.append(p);
  };
  const grid = document.createElementNS(ns, "rect");
  grid.setAttribute("x", P); grid.setAttribute("y", P); grid.setAttribute("width", W - 2 * P); grid.setAttribute("height", H - 2 * P);
  grid.setAttribute("fill", "none"); grid.setAttribute("stroke", "#d9dde5");
  svg.append(grid);
  line(path("weight"), "#2f6fd6", false);
  line(path("success"), "#2e9d5b", true);
  return el("div", { class: "chart", "data-chart": cluster },
    el("div", {}, el("strong", {}, cluster)), svg,
    el("div", { class: "legend" }, "— canary weight %   - - success rate %"));
}

function render() {
  const r = state.rollout;
  if (!r) return;
  const main = document.getElementById("main");
  const over = ["Succeeded", "Failed", "Aborted"].includes(r.phase);
  const history = (r.history || []).slice().reverse();
  main.replaceChildren(...[
    el("p", {}, el("a", { href: "#/" }, "← rollouts")),
    el("h1", {}, r.name + " ", el("span", { id: "phase" }, badge(r.phase))),
    el("div", { class: "meta" },
      (r.canary ? r.canary.namespace + "/" + r.canary.name : "") + " → " + (r.revision ? r.revision.version : "") +
      " · mode " + r.mode + " · failed clusters " + r.failedClusters + "/" + r.maxFailedClusters +
      (r.message ? " · " + r.message : "")),
    over ? null : el("div", { class: "actions" },
      r.phase === "Paused" ? button("Resume", "resume", {}) : button("Pause", "pause", {}),
      button("Abort", "abort", { reason: "aborted from the dashboard" }, { confirm: "Abort " + r.name + " and roll it back?", attrs: { class: "danger" } })),
    el("h2", {}, "Waves"),
    el("div", { class: "grid", id: "grid" }, r.waves.map((w) => waveColumn(r, w))),
    el("div", { class: "below" },
      el("section", {},
        el("h2", {}, "Weight and success rate"),
        el("div", { class: "charts" }, Object.entries(state.series).filter(([, s]) => s.length > 0).map(([c, s]) => chart(c, s)))),
      el("section", {},
        el("h2", {}, "Events"),
        el("ul", { class: "timeline", id: "timeline" }, history.map((h) => el("li", { "data-kind": h.kind },
          el("time", {}, time(h.time)), el("span", { class: "kind" }, h.kind),
          [h.wave, h.cluster].filter(Boolean).join(" / ") + (h.actor ? " by " + h.actor : "") + (h.message ? ": " + h.message : "")))))),
  ].filter((c) => c !== null));
}

async function route() {
  stopWatching();
  showError("");
  const m = location.hash.match(/^#\/rollouts\/(.+)$/);
  try {
    if (!state.session) await loadSession();
    if (m) {
      document.getElementById("main").replaceChildren(el("p", { class: "meta" }, "Loading…"));
      watch(decodeURIComponent(m[1]));
    } else {
      await showList();
    }
  } catch (e) {
    if (e.status === 401) showSignIn(e.message);
    else showError(e.message);
  }
}

window.addEventListener("hashchange", route);
document.getElementById("signout").addEventListener("click", (e) => { e.preventDefault(); signOut(); });
route();
