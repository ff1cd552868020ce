// corral's web page: a runs list and a live run view (DAG, timeline, task panel).
//
// Plain JS, no dependencies, no build step. Design notes:
// - The token lives in localStorage ("corral.token"). It gets there from the sign-in box, or
//   once from the URL fragment (#token=...), which the browser never sends to the server;
//   the fragment is removed at once.
// - Live events come over Server-Sent Events read with fetch() (EventSource cannot send an
//   Authorization header); on a drop the reader reconnects with Last-Event-ID.
// - The DAG is one SVG: nodes laid out in layers left to right (a node's layer is its longest
//   distance from a root; within a layer, nodes are ordered by the mean position of their
//   dependencies). Events only mark tasks dirty; one requestAnimationFrame per frame applies
//   them, and the timeline and critical path are recomputed at most twice a second, so a
//   1,000-task run stays responsive.
(function () {
  "use strict";

  const API = "/api/v1";
  const STATES = ["pending", "ready", "running", "retry_wait", "succeeded", "failed",
                  "skipped", "upstream_failed", "cancelled"];
  const FINAL = new Set(["succeeded", "failed", "skipped", "upstream_failed", "cancelled"]);
  const NODE_W = 150, NODE_H = 24, GAP_X = 50, GAP_Y = 10, PAD = 12;
  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ token & fetch
  const TOKEN_KEY = "corral.token";
  (function takeTokenFromFragment() {
    const m = location.hash.match(/^#token=([^&]+)/);
    if (m) {
      localStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + "#/");
    }
  })();
  const token = () => localStorage.getItem(TOKEN_KEY) || "";

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error && body.error.message) || ("HTTP " + status));
      this.status = status;
      this.body = body;
    }
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token()) h["Authorization"] = "Bearer " + token();
    return h;
  }

  async function api(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = headers(opts.headers);
    if (opts.json !== undefined) {
      opts.body = JSON.stringify(opts.json);
      opts.headers["Content-Type"] = "application/json";
      delete opts.json;
    }
    const res = await fetch(API + path, opts);
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (res.status === 401) { showLogin(body); throw new ApiError(401, body); }
    if (!res.ok) throw new ApiError(res.status, body);
    return body;
  }

  function flash(message) {
    const el = $("flash");
    if (!message) { el.hidden = true; return; }
    el.textContent = message;
    el.hidden = false;
  }

  // ------------------------------------------------------------------ event streams
  // Reads an SSE stream with fetch; calls onEvent(type, data, id). Reconnects with the last
  // id after a drop, until the stream says "end" or the signal aborts.
  async function follow(path, lastId, onEvent, signal) {
    let delay = 1000;
    while (!signal.aborted) {
      let ended = false;
      try {
        const h = headers({ "Accept": "text/event-stream" });
        if (lastId !== null && lastId !== undefined && lastId !== "") h["Last-Event-ID"] = String(lastId);
        const res = await fetch(API + path, { headers: h, signal: signal, cache: "no-store" });
        if (res.status === 401) { showLogin(null); return; }
        if (!res.ok) throw new Error("HTTP " + res.status);
        delay = 1000;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const chunk = await reader.read();
          if (chunk.done) break;
          buf += chunk.value;
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            let type = "message", data = "", id = null;
            for (const line of block.split("\n")) {
              if (line.startsWith(":")) continue;
              const i = line.indexOf(":");
              const field = i < 0 ? line : line.slice(0, i);
              const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
              if (field === "event") type = value;
              else if (field === "data") data += (data ? "\n" : "") + value;
              else if (field === "id") id = value;
              else if (field === "retry") delay = parseInt(value, 10) || delay;
            }
            if (!data) continue;
            if (id !== null) lastId = id;
            let parsed;
            try { parsed = JSON.parse(data); } catch (e) { continue; }
            onEvent(type, parsed, id);
            if (type === "end") ended = true;
          }
        }
      } catch (e) {
        if (signal.aborted) return;
      }
      if (ended || signal.aborted) return;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }

  // ------------------------------------------------------------------ views & routing
  let current = null; // { abort: AbortController } of the view on screen

  function show(id) {
    for (const v of ["view-login", "view-runs", "view-submit", "view-run"]) $(v).hidden = v !== id;
  }

  function showLogin(body) {
    if (current) { current.abort.abort(); current = null; }
    show("view-login");
    const msg = body && body.error ? body.error.message : "";
    $("login-error").textContent = token() && msg ? "The token was refused: " + msg : "";
  }

  async function route() {
    if (current) current.abort.abort();
    current = { abort: new AbortController() };
    flash("");
    const hash = location.hash || "#/";
    const m = hash.match(/^#\/runs\/([^/]+)$/);
    try {
      await whoami();
      if (m) await runView(decodeURIComponent(m[1]), current.abort.signal);
      else if (hash === "#/submit") show("view-submit");
      else await runsView(current.abort.signal);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
      if (e && e.name === "AbortError") return;
      flash(String(e.message || e));
    }
  }

  async function whoami() {
    const me = await api("/whoami");
    $("who").textContent = me.auth_enabled ? me.subject + " (" + me.role + ")" : "auth off";
    $("signout").hidden = !me.auth_enabled;
    document.body.dataset.role = me.role;
    return me;
  }

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    localStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    route();
  });
  $("signout").addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    showLogin(null);
  });
  window.addEventListener("hashchange", route);

  // ------------------------------------------------------------------ runs list
  const fmtTime = (iso) => iso ? new Date(iso).toLocaleString() : "-";
  const fmtDur = (s) => s === null || s === undefined ? "-" :
    s < 60 ? s.toFixed(s < 10 ? 2 : 1) + " s" : s < 3600 ? (s / 60).toFixed(1) + " min" :
    (s / 3600).toFixed(1) + " h";
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  let runsOffset = 0;

  async function runsView(signal) {
    show("view-runs");
    runsOffset = 0;
    await loadRuns(false);
    let timer = null;
    const refresh = () => {
      if (timer) return;
      timer = setTimeout(() => { timer = null; loadRuns(false).catch(() => {}); }, 400);
    };
    follow("/events", null, (type) => {
      if (type === "run" || type === "end" || type === "reset") refresh();
    }, signal);
  }

  async function loadRuns(append) {
    const q = new URLSearchParams({ limit: "50", offset: String(append ? runsOffset : 0) });
    if ($("filter-status").value) q.set("status", $("filter-status").value);
    if ($("filter-pipeline").value.trim()) q.set("pipeline", $("filter-pipeline").value.trim());
    const page = await api("/runs?" + q.toString());
    const rows = page.runs.map((r) => {
      const status = r.status === "running" && !r.live ? "crashed" : r.status;
      return "<tr data-run=\"" + esc(r.run_id) + "\"><td><a href=\"#/runs/" +
        encodeURIComponent(r.run_id) + "\">" + esc(r.run_id) + "</a></td><td>" +
        esc(r.pipeline) + "</td><td><span class=\"badge " + esc(status) + "\">" + esc(status) +
        "</span></td><td>" + esc(fmtTime(r.started_at)) + "</td><td class=\"num\">" +
        esc(fmtDur(r.duration_s)) + "</td><td class=\"num\">" + r.n_tasks + "</td></tr>";
    }).join("");
    if (append) $("runs-body").insertAdjacentHTML("beforeend", rows);
    else $("runs-body").innerHTML = rows || "<tr><td colspan=\"6\" class=\"muted\">no runs yet</td></tr>";
    runsOffset = page.next_offset || 0;
    $("runs-more").hidden = page.next_offset === null;
  }
  $("runs-more").addEventListener("click", () => loadRuns(true).catch((e) => flash(e.message)));
  $("filter-status").addEventListener("change", () => loadRuns(false).catch((e) => flash(e.message)));
  $("filter-pipeline").addEventListener("change", () => loadRuns(false).catch((e) => flash(e.message)));

  // ------------------------------------------------------------------ submit
  $("submit-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const params = {};
    for (const line of $("submit-params").value.split("\n")) {
      const i = line.indexOf("=");
      if (i > 0) params[line.slice(0, i).trim()] = line.slice(i + 1);
    }
    $("submit-problems").innerHTML = "";
    try {
      const res = await api("/runs", { method: "POST", json: { pipeline: $("submit-text").value, params: params } });
      location.hash = "#/runs/" + encodeURIComponent(res.run_id);
    } catch (e) {
      const problems = (e.body && e.body.error && e.body.error.problems) || [];
      $("submit-problems").innerHTML = problems.length ? problems.map((p) =>
        "<li>line " + esc(p.line === null ? "?" : p.line) + ": " + esc(p.message) +
        (p.hint ? " (" + esc(p.hint) + ")" : "") + "</li>").join("") :
        "<li>" + esc(e.message) + "</li>";
    }
  });

  // ------------------------------------------------------------------ run view: model
  // One object per run on screen; tasks are indexed by integer.
  function buildModel(detail) {
    const tasks = detail.tasks;
    const index = new Map(tasks.map((t, i) => [t.id, i]));
    const n = tasks.length;
    const deps = tasks.map((t) => t.deps.map((d) => index.get(d)).filter((j) => j !== undefined));
    const dependents = Array.from({ length: n }, () => []);
    deps.forEach((ds, i) => ds.forEach((j) => dependents[j].push(i)));
    return {
      detail: detail, tasks: tasks, index: index, deps: deps, dependents: dependents,
      state: tasks.map((t) => t.state), history: tasks.map((t) => t.history.slice()),
      attempts: tasks.map((t) => t.attempts), error: tasks.map((t) => t.error),
      lastClock: 0, lastClockAt: performance.now(), live: detail.live,
      status: detail.status, critical: detail.critical_path || [],
    };
  }

  function applyTransition(model, ev) {
    const i = model.index.get(ev.task);
    if (i === undefined) return -1;
    model.state[i] = ev.state;
    model.attempts[i] = Math.max(model.attempts[i], ev.attempt);
    const h = model.history[i];
    const open = h.length && h[h.length - 1].end_s === null ? h[h.length - 1] : null;
    if (ev.state === "running") {
      h.push({ attempt: ev.attempt, state: "running", start_s: ev.clock, end_s: null,
               started_at: ev.at, finished_at: null, duration_s: null, error: null,
               exit_code: null, has_log: true });
    } else if (open && ["succeeded", "failed", "retry_wait", "skipped", "cancelled"].includes(ev.state)) {
      open.state = ev.state === "retry_wait" ? "failed" : ev.state;
      open.end_s = ev.clock;
      open.finished_at = ev.at;
      open.duration_s = ev.clock - open.start_s;
      open.error = ev.error;
    }
    if (ev.state === "failed") model.error[i] = ev.error;
    if (ev.clock > model.lastClock) { model.lastClock = ev.clock; model.lastClockAt = performance.now(); }
    return i;
  }

  function nowClock(model) {
    if (!model.live) return model.lastClock;
    return model.lastClock + (performance.now() - model.lastClockAt) / 1000;
  }

  // Layers: longest distance from a root (Kahn's order); within a layer, by the mean
  // position of the dependencies (one sweep of the barycenter heuristic).
  function layout(model) {
    const n = model.tasks.length;
    const indeg = model.deps.map((d) => d.length);
    const order = [];
    const queue = [];
    for (let i = 0; i < n; i++) if (!indeg[i]) queue.push(i);
    const level = new Array(n).fill(0);
    for (let q = 0; q < queue.length; q++) {
      const i = queue[q];
      order.push(i);
      for (const k of model.dependents[i]) {
        level[k] = Math.max(level[k], level[i] + 1);
        if (--indeg[k] === 0) queue.push(k);
      }
    }
    const layers = [];
    for (const i of order) (layers[level[i]] = layers[level[i]] || []).push(i);
    const pos = new Array(n).fill(0);
    layers.forEach((layer, l) => {
      if (l > 0) {
        const key = new Map(layer.map((i) => {
          const ds = model.deps[i];
          return [i, ds.length ? ds.reduce((a, j) => a + pos[j], 0) / ds.length : 0];
        }));
        layer.sort((a, b) => key.get(a) - key.get(b));
      }
      layer.forEach((i, k) => { pos[i] = k; });
    });
    const x = new Array(n), y = new Array(n);
    let height = 0;
    layers.forEach((layer, l) => {
      layer.forEach((i, k) => {
        x[i] = PAD + l * (NODE_W + GAP_X);
        y[i] = PAD + k * (NODE_H + GAP_Y);
      });
      height = Math.max(height, layer.length);
    });
    return { x: x, y: y, width: PAD * 2 + layers.length * (NODE_W + GAP_X) - GAP_X,
             height: PAD * 2 + height * (NODE_H + GAP_Y) - GAP_Y };
  }

  function edgePath(model, geo, pairs) {
    let d = "";
    for (const [j, i] of pairs) {
      const x1 = geo.x[j] + NODE_W, y1 = geo.y[j] + NODE_H / 2;
      const x2 = geo.x[i], y2 = geo.y[i] + NODE_H / 2;
      const mx = (x1 + x2) / 2;
      d += "M" + x1 + " " + y1 + "C" + mx + " " + y1 + " " + mx + " " + y2 + " " + x2 + " " + y2;
    }
    return d;
  }

  function drawDag(model, geo) {
    const svg = $("dag");
    svg.setAttribute("width", geo.width);
    svg.setAttribute("height", geo.height);
    svg.setAttribute("viewBox", "0 0 " + geo.width + " " + geo.height);
    const pairs = [];
    model.deps.forEach((ds, i) => ds.forEach((j) => pairs.push([j, i])));
    const parts = ["<path class=\"edges\" d=\"" + edgePath(model, geo, pairs) + "\"/>",
                   "<path class=\"crit-edges\" d=\"\"/>"];
    const maxChars = Math.floor((NODE_W - 10) / 6.5);
    model.tasks.forEach((t, i) => {
      const label = t.id.length > maxChars ? t.id.slice(0, maxChars - 1) + "…" : t.id;
      parts.push("<g class=\"node\" data-i=\"" + i + "\" data-task=\"" + esc(t.id) +
        "\" data-state=\"" + esc(model.state[i]) + "\" transform=\"translate(" + geo.x[i] +
        "," + geo.y[i] + ")\"><title>" + esc(t.id) + "</title><rect width=\"" + NODE_W +
        "\" height=\"" + NODE_H + "\" rx=\"5\"/><text x=\"6\" y=\"16\">" + esc(label) +
        "</text></g>");
    });
    svg.innerHTML = parts.join("");
    return Array.from(svg.querySelectorAll("g.node"));
  }

  // The longest chain by duration (the run's own critical path once it has ended).
  function criticalPath(model) {
    if (!model.live && model.critical.length) {
      return model.critical.map((id) => model.index.get(id)).filter((i) => i !== undefined);
    }
    const now = nowClock(model);
    const n = model.tasks.length;
    const dur = model.history.map((h) => h.reduce((a, at) =>
      a + ((at.end_s === null ? now : at.end_s) - at.start_s), 0));
    const finish = new Array(n).fill(-1), best = new Array(n).fill(-1);
    const visit = (i) => {
      if (finish[i] >= 0) return finish[i];
      let start = 0;
      for (const j of model.deps[i]) {
        const f = visit(j);
        if (f > start || best[i] < 0) { start = Math.max(start, f); best[i] = j; }
      }
      finish[i] = start + dur[i];
      return finish[i];
    };
    let end = -1;
    for (let i = 0; i < n; i++) if (end < 0 || visit(i) > finish[end]) end = i;
    if (end < 0 || finish[end] <= 0) return [];
    const path = [];
    for (let i = end; i >= 0; i = best[i]) path.push(i);
    return path.reverse();
  }

  function drawGantt(model, crit) {
    const now = nowClock(model);
    const rows = [];
    model.history.forEach((h, i) => { if (h.length) rows.push(i); });
    rows.sort((a, b) => model.history[a][0].start_s - model.history[b][0].start_s);
    const critSet = new Set(crit);
    const labelW = 160, rowH = 14, width = Math.max(600, $("gantt-wrap").clientWidth - 4);
    let span = now;
    for (const i of rows) for (const at of model.history[i]) span = Math.max(span, at.end_s || 0);
    span = span || 1;
    const scale = (width - labelW - 10) / span;
    const height = rows.length * rowH + 24;
    const parts = [];
    const step = niceStep(span);
    for (let t = 0; t <= span + 1e-9; t += step) {
      const x = labelW + t * scale;
      parts.push("<line class=\"axis\" x1=\"" + x + "\" x2=\"" + x + "\" y1=\"0\" y2=\"" +
        (height - 14) + "\"/><text class=\"tick\" x=\"" + (x + 2) + "\" y=\"" + (height - 3) +
        "\">" + fmtDur(t) + "</text>");
    }
    rows.forEach((i, r) => {
      const y = r * rowH + 2;
      const id = model.tasks[i].id;
      parts.push("<text x=\"2\" y=\"" + (y + 10) + "\">" + esc(id.length > 24 ? id.slice(0, 23) + "…" : id) + "</text>");
      for (const at of model.history[i]) {
        const end = at.end_s === null ? now : at.end_s;
        const w = Math.max(1, (end - at.start_s) * scale);
        parts.push("<rect class=\"bar-" + esc(at.state) + (critSet.has(i) ? " crit" : "") +
          "\" data-i=\"" + i + "\" x=\"" + (labelW + at.start_s * scale) + "\" y=\"" + y +
          "\" width=\"" + w + "\" height=\"" + (rowH - 4) + "\"><title>" + esc(id) +
          " attempt " + at.attempt + ": " + esc(at.state) + ", " + fmtDur(end - at.start_s) +
          "</title></rect>");
      }
    });
    const svg = $("gantt");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.innerHTML = parts.join("");
    $("gantt-note").textContent = rows.length + " of " + model.tasks.length + " tasks started";
  }

  function niceStep(span) {
    const raw = span / 8;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (raw <= m * p) return m * p;
    return 10 * p;
  }

  // ------------------------------------------------------------------ run view
  async function runView(runId, signal) {
    show("view-run");
    $("run-title").textContent = runId;
    $("task-panel").innerHTML = "<p class=\"muted\">Click a task to see its attempts and log.</p>";
    $("legend").innerHTML = STATES.map((s) => "<span><i class=\"sw-" + s + "\"></i>" +
      s.replace("_", " ") + "</span>").join("") + "<span><i class=\"sw-crit\"></i>critical path</span>";
    const detail = await api("/runs/" + encodeURIComponent(runId));
    if (signal.aborted) return;
    const model = buildModel(detail);
    for (const h of model.history) for (const at of h) {
      if (at.end_s !== null && at.end_s > model.lastClock) model.lastClock = at.end_s;
      if (at.start_s > model.lastClock) model.lastClock = at.start_s;
    }
    const geo = layout(model);
    const nodes = drawDag(model, geo);
    const dirty = new Set();
    let selected = -1, frame = 0, lastSlow = 0, slowTimer = 0;

    const setStatus = () => {
      const status = model.status === "running" && !model.live ? "crashed" : model.status;
      $("run-status").textContent = status;
      $("run-status").className = "badge " + status;
      const counts = {};
      for (const s of model.state) counts[s] = (counts[s] || 0) + 1;
      $("run-counts").textContent = STATES.filter((s) => counts[s]).map((s) => counts[s] + " " + s.replace("_", " ")).join(" · ");
      $("run-cancel").hidden = !model.live;
      $("run-resume").hidden = model.live || model.status === "succeeded" || !!detail.resumed_by;
    };

    const slow = () => { // critical path + timeline, at most twice a second
      lastSlow = performance.now();
      const crit = criticalPath(model);
      const critSet = new Set(crit);
      nodes.forEach((el, i) => el.classList.toggle("crit", critSet.has(i)));
      const pairs = [];
      for (let k = 1; k < crit.length; k++) pairs.push([crit[k - 1], crit[k]]);
      $("dag").querySelector(".crit-edges").setAttribute("d", edgePath(model, geo, pairs));
      drawGantt(model, crit);
    };

    const flush = () => {
      frame = 0;
      for (const i of dirty) nodes[i].setAttribute("data-state", model.state[i]);
      const panelDirty = dirty.has(selected);
      dirty.clear();
      setStatus();
      if (panelDirty) renderPanel(false);
      const since = performance.now() - lastSlow;
      if (since >= 500) slow();
      else if (!slowTimer) slowTimer = setTimeout(() => { slowTimer = 0; slow(); }, 500 - since);
    };
    const schedule = () => { if (!frame) frame = requestAnimationFrame(flush); };

    let logTimer = 0;
    const renderPanel = async (fetchLog) => {
      if (selected < 0) return;
      const i = selected, t = model.tasks[i];
      const rows = model.history[i].map((at) => "<tr><td>" + at.attempt + "</td><td>" +
        esc(at.state) + "</td><td>" + fmtDur(at.start_s) + "</td><td>" +
        fmtDur(at.end_s === null ? null : at.end_s - at.start_s) + "</td><td>" +
        esc(at.exit_code === null || at.exit_code === undefined ? "" : at.exit_code) + "</td></tr>").join("");
      const panel = $("task-panel");
      const keepLog = panel.dataset.task === t.id ? panel.querySelector("pre.log") : null;
      panel.dataset.task = t.id;
      panel.innerHTML = "<h4>" + esc(t.id) + "</h4><div><span class=\"badge " + esc(model.state[i]) +
        "\">" + esc(model.state[i]) + "</span> <span class=\"muted\">" + esc(t.executor) +
        " executor" + (t.reused ? ", reused from the resumed run" : "") + "</span></div>" +
        (t.deps.length ? "<p class=\"muted\">after " + t.deps.map(esc).join(", ") + "</p>" : "") +
        (model.error[i] ? "<p class=\"error\">" + esc(model.error[i]) + "</p>" : "") +
        "<table><thead><tr><th>#</th><th>state</th><th>start</th><th>took</th><th>exit</th></tr></thead><tbody>" +
        (rows || "<tr><td colspan=\"5\" class=\"muted\">no attempt yet</td></tr>") +
        "</tbody></table><h4>Log</h4><pre class=\"log\">" + (keepLog ? keepLog.innerHTML : "…") + "</pre>";
      if (!fetchLog && keepLog) return;
      try {
        const log = await api("/runs/" + encodeURIComponent(runId) + "/tasks/" +
          encodeURIComponent(t.id) + "/log?tail=200");
        if (selected !== i || signal.aborted) return;
        let text = log.has_log ? (log.text || "(empty)") : "(no log: this attempt wrote no output)";
        if (log.traceback) text += "\n--- traceback\n" + log.traceback;
        else if (log.error) text += "\n--- " + log.error;
        const pre = $("task-panel").querySelector("pre.log");
        if (pre) pre.textContent = text;
      } catch (e) { /* shown on the next refresh */ }
    };

    $("dag").onclick = (ev) => {
      const g = ev.target.closest("g.node");
      if (!g) return;
      if (selected >= 0) nodes[selected].classList.remove("sel");
      selected = parseInt(g.dataset.i, 10);
      g.classList.add("sel");
      renderPanel(true);
    };
    $("gantt").onclick = (ev) => {
      const r = ev.target.closest("rect[data-i]");
      if (r) nodes[parseInt(r.dataset.i, 10)].dispatchEvent(new MouseEvent("click", { bubbles: true }));
    };
    $("run-fit").onclick = () => $("graph-wrap").classList.toggle("fit");
    $("run-cancel").onclick = async () => {
      try { await api("/runs/" + encodeURIComponent(runId) + "/cancel", { method: "POST" }); flash("cancelling…"); }
      catch (e) { flash(e.message); }
    };
    $("run-resume").onclick = async () => {
      try {
        const res = await api("/runs/" + encodeURIComponent(runId) + "/resume", { method: "POST" });
        location.hash = "#/runs/" + encodeURIComponent(res.run_id);
      } catch (e) { flash(e.message); }
    };

    setStatus();
    slow();
    logTimer = setInterval(() => {
      if (signal.aborted) { clearInterval(logTimer); return; }
      if (selected >= 0 && model.state[selected] === "running") renderPanel(true);
      if (model.live) slow();
    }, 2000);
    signal.addEventListener("abort", () => { clearInterval(logTimer); if (frame) cancelAnimationFrame(frame); });

    if (!model.live && model.status !== "running") return;
    await follow("/runs/" + encodeURIComponent(runId) + "/events", detail.last_event_id, (type, data) => {
      if (type === "transition") {
        const i = applyTransition(model, data);
        if (i >= 0) { dirty.add(i); schedule(); }
      } else if (type === "run") {
        model.live = data.live !== false;
      } else if (type === "end") {
        model.live = false;
        model.status = data.status;
        model.critical = data.critical_path || model.critical;
        schedule();
        // The stored run has the final timings: read them once.
        api("/runs/" + encodeURIComponent(runId)).then((d) => {
          if (signal.aborted) return;
          model.status = d.status;
          model.critical = d.critical_path;
          d.tasks.forEach((t, i) => { model.history[i] = t.history; model.state[i] = t.state; dirty.add(i); });
          lastSlow = 0;
          schedule();
        }).catch(() => {});
      }
    }, signal);
  }

  route();
})();
