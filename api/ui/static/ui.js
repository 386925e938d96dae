/* EMS dashboard (docs/ui.md). Reads only the REST API under ../api/v1; no other data path.
 *
 * Every 2 s: GET status, new events (after_seq) and new measurement rows (from_ts), then update the
 * DOM in place (text and attributes change only when their value does: no flicker). When no status
 * answer has arrived for STALE_AFTER_MS the page says "stale" and greys the values out.
 * The operator token is kept only in sessionStorage (this tab); every text from the API goes into
 * the page through textContent, never as HTML.
 */
(() => {
  "use strict";

  const API = "../api/v1";
  const REFRESH_MS = 2000;
  const STALE_AFTER_MS = 5000;
  const FETCH_TIMEOUT_MS = 4000;
  const WINDOW_S = 3600;
  const EVENTS_SHOWN = 12;
  const EVENTS_KEPT = 100;
  const ZERO_W = 10; // |power| below this reads as "none" in the direction words
  const TOKEN_KEY = "ems.operatorToken";
  const CHART_FIELDS = ["grid_power_w", "pv_power_w", "ess_power_w", "soc_pct"];
  const PLAN_EVERY = 15;        // ticks (about 30 s) between reads of the plan
  const PLAN_PAST_S = 3 * 3600; // the plan chart shows this much measured history before now
  const MODES = ["IDLE", "SELF_CONSUMPTION", "CHARGE_ONLY", "DISCHARGE_ONLY"];

  const $ = (id) => document.getElementById(id);
  const st = {
    lastOkAt: 0,          // Date.now() of the last status answer
    lastError: "",
    status: null,
    eventsSeq: null,      // highest event seq seen (null: history not loaded yet)
    events: [],
    rows: { ts: [], grid: [], pv: [], load: [], battery: [], soc: [] },
    rowsTs: null,         // ts of the newest measurement row (null: history not loaded yet)
    source: "",
    serverOffsetS: 0,     // server wall clock - browser wall clock, from the Date header
    chart: null,
    timer: 0,
    busy: false,
    again: false,         // an action asked for a refresh while one was running
    locked: false,        // reads need a token (api.protect_reads)
    ticks: 0,
    plan: null,           // last GET /plan answer (null: not read yet or planner off)
    planActual: { ts: [], grid: [], soc: [] },
    planChart: null,
  };

  // ---- small DOM helpers: write only on change ----------------------------------------------
  function setText(el, text) { if (el && el.textContent !== text) el.textContent = text; }
  function setAttr(el, name, value) {
    if (!el) return;
    if (value === null || value === undefined) { if (el.hasAttribute(name)) el.removeAttribute(name); return; }
    const v = String(value);
    if (el.getAttribute(name) !== v) el.setAttribute(name, v);
  }
  function setHidden(el, hidden) { if (el && el.hidden !== hidden) el.hidden = hidden; }
  function setClass(el, name, on) { if (el && el.classList.contains(name) !== on) el.classList.toggle(name, on); }
  function li(text, cls, attrs) {
    const e = document.createElement("li");
    e.textContent = text;
    if (cls) e.className = cls;
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  /* Replace a list's children only when the wanted content differs (key = texts + classes). */
  function setList(ul, items) {
    const key = JSON.stringify(items.map((i) => [i.textContent, i.className, i.title || ""]));
    if (ul.dataset.key === key) return;
    ul.dataset.key = key;
    ul.replaceChildren(...items);
  }

  // ---- formatting ---------------------------------------------------------------------------
  const kw = (w) => (Math.abs(w) / 1000).toFixed(2);
  const enumText = (s) => (s ? String(s).replace(/_/g, " ") : "—");
  function age(s) {
    if (s === null || s === undefined || !isFinite(s)) return "never";
    if (s < 10) return `${s.toFixed(1)} s`;
    if (s < 120) return `${Math.round(s)} s`;
    if (s < 7200) return `${Math.floor(s / 60)} min`;
    if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d`;
  }
  function clock(ts) {
    const d = new Date(ts * 1000);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }
  const signedKw = (w) => `${w > 0 ? "+" : w < 0 ? "−" : ""}${kw(w)} kW`;
  function direction(kind, w) {
    const zero = Math.abs(w) < ZERO_W;
    switch (kind) {
      case "grid": return zero ? ["balanced", "zero"] : w > 0 ? ["importing ↓", "import"] : ["exporting ↑", "export"];
      case "pv": return zero ? ["no production", "zero"] : ["producing", "produce"];
      case "load": return zero ? ["no load", "zero"] : ["consuming", "consume"];
      case "battery": return zero ? ["idle", "zero"] : w > 0 ? ["discharging", "discharge"] : ["charging", "charge"];
      default: return ["", ""];
    }
  }
  const loadOf = (grid, pv, ess) => (grid === null || grid === undefined || ess === null || ess === undefined ? null : grid + (pv || 0) + ess);

  // ---- token --------------------------------------------------------------------------------
  function token() { try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return ""; } }
  function setToken(t) {
    try { if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* storage off: token lives nowhere */ }
    renderAuth();
  }

  // ---- API ----------------------------------------------------------------------------------
  async function api(method, path, { body, params } = {}) {
    const url = new URL(`${API}${path}`, document.baseURI);
    for (const [k, v] of params || []) url.searchParams.append(k, v);
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const resp = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: ctl.signal, cache: "no-store", credentials: "omit" });
      const date = Date.parse(resp.headers.get("Date") || "");
      if (isFinite(date)) st.serverOffsetS = date / 1000 - Date.now() / 1000;
      let data = null;
      try { data = await resp.json(); } catch (_) { data = null; }
      if (resp.ok) return { ok: true, status: resp.status, data };
      const msg = data && data.message ? data.message : resp.statusText || "error";
      const code = data && data.error ? data.error : "";
      return { ok: false, status: resp.status, data, error: `HTTP ${resp.status}${code ? " " + code : ""}: ${msg}` };
    } catch (e) {
      return { ok: false, status: 0, data: null, error: e.name === "AbortError" ? "no answer within 4 s" : "connection failed" };
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- live push ----------------------------------------------------------------------------
  // GET /api/v1/stream (Server-Sent Events) read with fetch, so the token goes in a header as for every
  // read; each status change or event refreshes the page at once. Polling (REFRESH_MS) goes on
  // beside it: when the stream is refused (503: full), missing or cut, the page still updates.
  const STREAM_RETRY_MS = 5000;
  async function stream() {
    const headers = { Accept: "text/event-stream" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    if (st.lastEventId) headers["Last-Event-ID"] = st.lastEventId;
    try {
      const resp = await fetch(new URL(`${API}/stream`, document.baseURI), { headers, cache: "no-store", credentials: "omit" });
      if (!resp.ok || !resp.body) throw new Error(`stream: HTTP ${resp.status}`);
      st.streaming = true;
      setAttr(document.body, "data-stream", "open");
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const msg = buf.slice(0, cut); buf = buf.slice(cut + 2);
          let kind = "message", hasData = false;
          for (const line of msg.split("\n")) {
            if (line.startsWith("event:")) kind = line.slice(6).trim();
            else if (line.startsWith("id:")) st.lastEventId = line.slice(3).trim();
            else if (line.startsWith("data:")) hasData = true;
          }
          if (hasData && (kind === "status" || kind === "event")) { st.pushes = (st.pushes || 0) + 1; tick(); }
        }
      }
    } catch (_) { /* refused or cut: polling carries on */ }
    st.streaming = false;
    setAttr(document.body, "data-stream", "closed");
    setTimeout(stream, STREAM_RETRY_MS);
  }

  // ---- refresh loop -------------------------------------------------------------------------
  async function tick() {
    if (st.busy) { st.again = true; return; }
    st.busy = true;
    st.again = false;
    clearTimeout(st.timer);
    const started = Date.now();
    try {
      const planDue = st.ticks++ % PLAN_EVERY === 0;
      const [status] = await Promise.all([loadStatus(), loadEvents(), loadMeasurements(), planDue ? loadPlan() : null]);
      if (status) renderStatus(status);
    } finally {
      st.busy = false;
      renderConn();
      st.timer = setTimeout(tick, st.again ? 0 : Math.max(200, REFRESH_MS - (Date.now() - started)));
    }
  }

  async function loadStatus() {
    const r = await api("GET", "/status");
    if (r.ok) {
      st.lastOkAt = Date.now();
      st.lastError = "";
      st.locked = false;
      st.status = r.data;
      return r.data;
    }
    st.locked = r.status === 401;
    st.lastError = r.error;
    return null;
  }

  async function loadEvents() {
    if (st.eventsSeq === null) { // first: the last hour, paged
      const from = Date.now() / 1000 + st.serverOffsetS - WINDOW_S;
      let after = 0;
      const got = [];
      for (let page = 0; page < 10; page++) {
        const r = await api("GET", "/events", { params: [["from_ts", from.toFixed(3)], ["after_seq", String(after)], ["limit", "1000"]] });
        if (!r.ok) return;
        got.push(...r.data.events);
        if (r.data.next_after_seq === null || r.data.next_after_seq === undefined) break;
        after = r.data.next_after_seq;
      }
      st.events = got.slice(-EVENTS_KEPT);
      st.eventsSeq = got.length ? got[got.length - 1].seq : after;
    } else {
      const r = await api("GET", "/events", { params: [["after_seq", String(st.eventsSeq)], ["limit", "200"]] });
      if (!r.ok || !r.data.events.length) { renderEvents(); return; }
      st.events = st.events.concat(r.data.events).slice(-EVENTS_KEPT);
      st.eventsSeq = r.data.events[r.data.events.length - 1].seq;
    }
    renderEvents();
  }

  async function loadMeasurements() {
    const fields = CHART_FIELDS.map((f) => ["fields", f]);
    const first = st.rowsTs === null;
    // to_ts a little ahead of the server's clock, so a row stamped "now" is inside the range
    const now = Date.now() / 1000 + st.serverOffsetS;
    const to = ["to_ts", (now + 300).toFixed(3)];
    const params = first ? [["resolution", "1m"], ["from_ts", (now - WINDOW_S).toFixed(3)], to, ["limit", "1000"], ...fields]
      : [["resolution", "1s"], ["from_ts", (st.rowsTs + 0.001).toFixed(3)], to, ["limit", "1000"], ...fields];
    const r = await api("GET", "/measurements", { params });
    if (!r.ok) return;
    st.source = r.data.source;
    const R = st.rows;
    for (const row of r.data.rows) {
      if (st.rowsTs !== null && row.ts <= st.rowsTs) continue;
      const v = row.values || {};
      const num = (x) => (typeof x === "number" && isFinite(x) ? x : null);
      const grid = num(v.grid_power_w), pv = num(v.pv_power_w), ess = num(v.ess_power_w), soc = num(v.soc_pct);
      const load = loadOf(grid, pv, ess);
      R.ts.push(row.ts);
      R.grid.push(grid === null ? null : grid / 1000);
      R.pv.push(pv === null ? null : pv / 1000);
      R.load.push(load === null ? null : load / 1000);
      R.battery.push(ess === null ? null : ess / 1000);
      R.soc.push(soc);
      st.rowsTs = row.ts;
    }
    if (first && st.rowsTs === null) st.rowsTs = now - 120;
    const cut = (st.rowsTs || 0) - WINDOW_S;
    let drop = 0;
    while (drop < R.ts.length && R.ts[drop] < cut) drop++;
    if (drop) for (const k of Object.keys(R)) R[k].splice(0, drop);
    renderChart();
  }

  /* The plan (GET /plan) and what was measured over the same hours (1 min rows): the card stays
     hidden while the planner is off. */
  async function loadPlan() {
    const r = await api("GET", "/plan");
    if (!r.ok) return;
    st.plan = r.data;
    if (!r.data.planner || !r.data.planner.enabled) { renderPlan(); return; }
    const now = Date.now() / 1000 + st.serverOffsetS;
    const from = now - PLAN_PAST_S;
    const m = await api("GET", "/measurements", { params: [["resolution", "1m"], ["from_ts", from.toFixed(0)], ["to_ts", (now + 60).toFixed(0)],
      ["limit", "1000"], ["fields", "grid_power_w"], ["fields", "soc_pct"]] });
    const A = { ts: [], grid: [], soc: [] };
    if (m.ok) {
      for (const row of m.data.rows) {
        const v = row.values || {};
        A.ts.push(row.ts + 30); // minute mean: plot at the middle of the minute
        A.grid.push(typeof v.grid_power_w === "number" ? v.grid_power_w / 1000 : null);
        A.soc.push(typeof v.soc_pct === "number" ? v.soc_pct : null);
      }
    }
    st.planActual = A;
    renderPlan();
  }

  function planData() {
    const p = st.plan, A = st.planActual;
    const slots = (p && p.slots) || [];
    const xs = new Set(A.ts);
    for (const s of slots) { xs.add(s.start_ts); xs.add(s.end_ts); }
    const ts = [...xs].sort((a, b) => a - b);
    const price = [], socPlan = [], gridPlan = [], socAct = [], gridAct = [];
    const act = new Map(A.ts.map((t, i) => [t, i]));
    let k = 0;
    for (const t of ts) {
      while (k < slots.length && slots[k].end_ts <= t) k++;
      const s = k < slots.length && slots[k].start_ts <= t ? slots[k] : null;
      price.push(s ? s.price_import_eur_per_kwh : null);
      gridPlan.push(s ? s.planned_grid_w / 1000 : null);
      // planned SOC is at each slot's end: draw it there (and the start SOC at the first slot's start)
      const ended = slots.find((x) => x.end_ts === t);
      socPlan.push(ended ? ended.planned_soc_pct : slots.length && t === slots[0].start_ts ? p.soc_start_pct : null);
      const i = act.get(t);
      socAct.push(i === undefined ? null : A.soc[i]);
      gridAct.push(i === undefined ? null : A.grid[i]);
    }
    return [ts, price, gridPlan, gridAct, socPlan, socAct];
  }

  function makePlanChart() {
    const el = $("plan-chart");
    if (typeof uPlot !== "function") return null;
    const stepped = uPlot.paths && uPlot.paths.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined;
    const timeAxis = (u, splits) => splits.map((ts) => new Date(ts * 1000).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit", hour12: false }));
    const opts = {
      width: Math.max(200, el.clientWidth),
      height: window.matchMedia("(max-width: 700px)").matches ? 220 : 280,
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, kw: { auto: true }, pct: { range: [0, 100] }, eur: { auto: true } },
      axes: [
        { stroke: "#7a8696", grid: { stroke: "#eef1f5" }, values: timeAxis, space: 90 },
        { scale: "kw", label: "grid kW", stroke: "#7a8696", grid: { stroke: "#eef1f5" }, size: 48 },
        { scale: "pct", label: "SOC %", side: 1, stroke: "#7a8696", grid: { show: false }, size: 44 },
        { scale: "eur", label: "price /kWh", side: 1, stroke: "#b7791f", grid: { show: false }, size: 52, values: (u, v) => v.map((x) => (x === null ? "" : x.toFixed(2))) },
      ],
      series: [
        { value: (u, v) => (v === null ? "—" : new Date(v * 1000).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit", hour12: false })) },
        { label: "Import price", scale: "eur", stroke: "#b7791f", width: 1.5, paths: stepped, value: (u, v) => (v === null ? "—" : v.toFixed(3)) },
        { label: "Grid planned", scale: "kw", stroke: css("--c-grid"), width: 1.5, dash: [5, 4], paths: stepped, value: (u, v) => (v === null ? "—" : `${v.toFixed(2)} kW`) },
        { label: "Grid actual", scale: "kw", stroke: css("--c-grid"), width: 1.5, spanGaps: false, value: (u, v) => (v === null ? "—" : `${v.toFixed(2)} kW`) },
        { label: "SOC planned", scale: "pct", stroke: css("--c-soc"), width: 2, dash: [6, 4], spanGaps: true, value: (u, v) => (v === null ? "—" : `${v.toFixed(1)} %`) },
        { label: "SOC actual", scale: "pct", stroke: css("--c-soc"), width: 2, value: (u, v) => (v === null ? "—" : `${v.toFixed(1)} %`) },
      ],
    };
    const u = new uPlot(opts, planData(), el);
    if (typeof ResizeObserver === "function") {
      new ResizeObserver(() => { const w = Math.max(200, el.clientWidth); if (w !== u.width) u.setSize({ width: w, height: u.height }); }).observe(el);
    }
    return u;
  }

  function renderPlan() {
    const p = st.plan, card = $("plan-card");
    const on = !!(p && p.planner && p.planner.enabled);
    setHidden(card, !on);
    if (!on) return;
    const pl = p.planner;
    setAttr(card, "data-state", pl.state);
    const items = [];
    const add = (k, v, cls) => { const e = document.createElement("span"); const kk = document.createElement("span"); kk.className = "k"; kk.textContent = k; e.append(kk, document.createTextNode(v)); if (cls) e.className = cls; items.push(e); };
    add("planner", `${pl.state} · ${pl.reason}`, pl.state === "ok" ? "" : pl.state === "stale" || pl.state === "starting" ? "warn" : "bad");
    add("following", p.followed ? p.followed.replace(/^plan:/, "").replace(/_/g, " ") : "no (plain self-consumption)");
    if (p.savings_eur !== null && p.savings_eur !== undefined) {
      add("expected", `${p.expected_cost_eur.toFixed(2)} ${p.currency} vs ${p.self_consumption_cost_eur.toFixed(2)} self-consumption (saves ${p.savings_eur.toFixed(2)})`);
    }
    if (p.import_cap) add("import cap", `${(p.import_cap.power_w / 1000).toFixed(1)} kW${p.import_cap.remaining_s !== null ? " for " + age(p.import_cap.remaining_s) : ""}`, "warn");
    const sum = $("plan-summary");
    const key = items.map((e) => e.textContent).join("|");
    if (sum.dataset.key !== key) { sum.dataset.key = key; sum.replaceChildren(...items); }
    setText($("plan-note"), p.slots.length ? `${p.slots.length} slots · ${p.horizon_h} h · made ${age(p.age_s)} ago` : "");
    setAttr($("plan-chart"), "data-slots", p.slots.length);
    setHidden($("plan-empty"), p.slots.length > 0);
    if (!st.planChart) st.planChart = makePlanChart();
    if (st.planChart) st.planChart.setData(planData());
  }

  // ---- rendering: status --------------------------------------------------------------------
  function renderStatus(s) {
    document.title = `${enumText(s.state)} · EMS ${s.site_id}`;
    setText($("site-id"), s.site_id);
    renderControl(s.control, s.state);
    renderState(s);
    renderPower(s.measurements || {});
    renderSoc(s);
    renderCommand(s);
    renderWorkers(s);
    renderModeButtons(s.requested_mode);
    setText($("cycles"), `cycle ${s.cycles} · overruns ${s.overruns} · up ${age(s.uptime_s)}`);
    setAttr(document.body, "data-cycles", s.cycles); // which status the page shows (tests read it)
  }

  // The badge says what reaches the inverter now: LIVE (green) only while live control is in a state that commands it.
  function renderControl(c, state) {
    const badge = $("control-badge");
    const [text, cls, title] = !c.enabled ? ["CONTROL OFF", "badge badge-off", "control.enabled is false: the inverter gets 0 W"]
      : c.dry_run ? ["DRY RUN", "badge badge-warn", "control.dry_run is true: commands are computed, the inverter gets 0 W"]
      : state === "FAULT" ? ["LIVE · FAULT 0 W", "badge badge-fault", "control is live, but the state is FAULT: the inverter gets 0 W until every cause has cleared"]
      : state === "STOP" || state === "STANDBY" ? [`LIVE · ${state} 0 W`, "badge badge-off", `control is live; in ${state} the inverter gets 0 W`]
      : ["LIVE", "badge badge-live", "live control: commands reach the inverter"];
    setText(badge, text); setAttr(badge, "class", cls); setAttr(badge, "title", title);
    const dry = $("dry-run-badge");
    setHidden(dry, c.live);
    setText(dry, c.enabled ? "DRY RUN · 0 W written" : "CONTROL OFF · 0 W written");
  }

  function renderState(s) {
    const card = $("state-card");
    setAttr(card, "data-state", s.state);
    const pill = $("state");
    setText(pill, enumText(s.state)); setAttr(pill, "data-value", s.state);
    setText($("state-age"), `for ${age(s.state_age_s)}`);
    const req = $("requested-mode"), eff = $("effective-mode");
    setText(req, enumText(s.requested_mode)); setAttr(req, "data-value", s.requested_mode);
    setText(eff, enumText(s.effective_mode)); setAttr(eff, "data-value", s.effective_mode);
    setList($("fault-causes"), (s.fault_causes || []).map((c) => {
      const e = li(c, "", { "data-cause": c });
      const why = causeWhy(c);
      if (why) { const w = document.createElement("span"); w.className = "why"; w.textContent = why; e.append(w); }
      return e;
    }));
    setList($("bms-flags"), [
      ...(s.bms_protections || []).map((f) => li(`BMS protection: ${f}`, "prot")),
      ...(s.bms_warnings || []).map((f) => li(`BMS warning: ${f}`, "")),
    ]);
    const sp = s.external_setpoint, box = $("setpoint");
    setHidden(box, !sp);
    if (sp) {
      const dir = sp.power_w > 0 ? "discharge" : sp.power_w < 0 ? "charge" : "hold";
      const left = sp.remaining_s > 0 ? `${age(sp.remaining_s)} left` : "lapsed";
      setText(box, `External set-point ${signedKw(sp.power_w)} (${dir}) · ${left} · by ${sp.source}${sp.reason ? " · " + sp.reason : ""}`);
      setAttr(box, "data-value", sp.power_w);
    }
  }

  function tile(kind, reading, value) {
    const t = $(`tile-${kind}`), num = $(`${kind}-value`), dirEl = $(`${kind}-dir`);
    if (value === null || value === undefined) {
      setText(num, "—"); setAttr(t, "data-value", null); setText(dirEl, "no reading"); setAttr(dirEl, "data-dir", "none");
      setClass(t, "is-stale", false);
      return;
    }
    setText(num, kw(value)); setAttr(t, "data-value", value);
    const stale = !!(reading && reading.stale);
    setClass(t, "is-stale", stale);
    const [words, dir] = direction(kind, value);
    setText(dirEl, stale ? `stale ${age(reading.age_s)}` : words);
    setAttr(dirEl, "data-dir", stale ? "stale" : dir);
  }

  function renderPower(m) {
    const v = (k) => (m[k] ? m[k].value : null);
    tile("grid", m.grid_power_w, v("grid_power_w"));
    tile("pv", m.pv_power_w, v("pv_power_w"));
    tile("battery", m.ess_power_w, v("ess_power_w"));
    const load = loadOf(v("grid_power_w"), v("pv_power_w"), v("ess_power_w"));
    const anyStale = ["grid_power_w", "pv_power_w", "ess_power_w"].some((k) => m[k] && m[k].stale);
    tile("load", anyStale ? { stale: true, age_s: Math.max(...["grid_power_w", "pv_power_w", "ess_power_w"].map((k) => (m[k] ? m[k].age_s : 0))) } : null, load);
    const noPv = load !== null && !m.pv_power_w;
    if (noPv && !anyStale) { setText($("load-dir"), "net of PV"); setAttr($("load-dir"), "data-dir", "net"); }
    setText($("flow-note"), noPv ? "load = grid + battery (no PV reading)" : "load = grid + PV + battery");
  }

  function renderSoc(s) {
    const r = (s.measurements || {}).soc_pct;
    const num = $("soc-value"), fill = $("soc-fill");
    const c = s.control || {};
    const lo = typeof c.soc_min_pct === "number" ? c.soc_min_pct : null;
    const hi = typeof c.soc_max_pct === "number" ? c.soc_max_pct : null;
    if (r) {
      setText(num, r.value.toFixed(1)); setAttr(num, "data-value", r.value);
      fill.style.width = `${Math.max(0, Math.min(100, r.value))}%`;
      const low = lo !== null && r.value <= lo, high = hi !== null && r.value >= hi;
      fill.style.background = low ? "var(--bad)" : high ? "var(--info)" : "var(--c-soc)";
      setText($("soc-age"), r.stale ? `stale · ${age(r.age_s)} old` : `${age(r.age_s)} ago`);
    } else {
      setText(num, "—"); setAttr(num, "data-value", null); fill.style.width = "0";
      setText($("soc-age"), "no reading");
    }
    const m = s.measurements || {};
    const extra = [["soh_pct", "SOH ", " %", 0], ["bms_voltage_v", "", " V", 1], ["bms_current_a", "", " A", 1], ["bms_temperature_degc", "", " °C", 0]]
      .filter(([k]) => m[k]).map(([k, pre, unit, dp]) => `${pre}${m[k].value.toFixed(dp)}${unit}`);
    setText($("soc-extra"), extra.length ? `battery ${extra.join(" · ")}` : "");
    const minMark = $("soc-min-mark"), maxMark = $("soc-max-mark");
    setHidden(minMark, lo === null); setHidden(maxMark, hi === null);
    if (lo !== null) minMark.style.left = `${lo}%`;
    if (hi !== null) maxMark.style.left = `calc(${hi}% - 2px)`;
    const w = $("soc-window");
    if (lo !== null && hi !== null) {
      const limit = (s.limits || []).find((l) => l.name === "soc_min" || l.name === "soc_max");
      setText(w, `window ${lo.toFixed(0)}–${hi.toFixed(0)} %${limit ? " · " + (limit.name === "soc_min" ? "discharge blocked" : "charge blocked") : ""}`);
      setAttr(w, "data-min", lo); setAttr(w, "data-max", hi);
    } else {
      setText(w, "window: not reported by this API version");
    }
  }

  function renderCommand(s) {
    const c = s.command;
    const comp = $("cmd-computed"), wr = $("cmd-written");
    if (!c) {
      setText(comp, "—"); setText(wr, "—"); setAttr(comp, "data-value", null); setAttr(wr, "data-value", null);
      setText($("cmd-computed-dir"), "no cycle yet"); setText($("cmd-ack"), "\u00a0");
    } else {
      setText(comp, (c.setpoint_w < 0 ? "−" : "") + kw(c.setpoint_w)); setAttr(comp, "data-value", c.setpoint_w);
      setText(wr, (c.written_w < 0 ? "−" : "") + kw(c.written_w)); setAttr(wr, "data-value", c.written_w);
      setText($("cmd-computed-dir"), direction("battery", c.setpoint_w)[0]);
      setText($("cmd-ack"), `seq ${c.seq} · ${c.acknowledged ? "written" : "not yet written"}`);
    }
    const items = (s.limits || []).map((l) => {
      const e = li(l.name, "", { "data-limit": l.name });
      e.title = l.why || "";
      return e;
    });
    for (const [why, title] of [[c && c.hold, "the law holds 0 W"], [c && c.gate, "gate: the inverter gets 0 W"]]) {
      if (why) { const e = li(why, "gate", { "data-gate": why }); e.title = title; items.push(e); }
    }
    setList($("limits"), items.length ? items : [li("none", "none")]);
  }

  /* Health per device (ess, meter, pv, bms, broker, store, uplink, ...): a non-required device that
     fails shows "degraded" and does not stop the battery; a required one "failing" means FAULT. */
  function renderWorkers(s) {
    const tbody = $("workers").tBodies[0];
    const ds = s.devices || [];
    const names = ds.map((d) => d.name).join("\u0000");
    if (tbody.dataset.names !== names) {
      tbody.dataset.names = names;
      tbody.replaceChildren(...ds.map((d) => {
        const tr = document.createElement("tr");
        tr.setAttribute("data-device", d.name);
        for (const cls of ["", "", "r", "r", "r"]) { const td = document.createElement("td"); if (cls) td.className = cls; tr.append(td); }
        tr.cells[0].textContent = d.name;
        return tr;
      }));
      if (!ds.length) {
        const tr = document.createElement("tr"), td = document.createElement("td");
        td.colSpan = 5; td.className = "muted"; td.textContent = "no devices registered"; tr.append(td); tbody.append(tr);
      }
    }
    ds.forEach((d, i) => {
      const tr = tbody.rows[i];
      const cls = d.status === "failing" ? "health bad" : d.status === "degraded" ? "health warn" : d.error_streak ? "health warn" : "health";
      let badge = tr.cells[1].firstChild;
      if (!badge) { badge = document.createElement("span"); tr.cells[1].append(badge); }
      setText(badge, d.status); setAttr(badge, "class", cls);
      setAttr(tr, "data-ok", d.status === "ok" || d.status === "starting");
      setText(tr.cells[2], d.last_ok_age_s === null ? "—" : age(d.last_ok_age_s));
      setText(tr.cells[3], d.required ? "required" : "optional");
      setText(tr.cells[4], `${d.error_streak} / ${d.errors_total}`);
      setAttr(tr.cells[4], "title", d.last_error ? `last error: ${d.last_error}` : "error streak / total");
    });
  }

  function renderModeButtons(mode) {
    for (const b of $("mode-buttons").querySelectorAll("button[data-mode]")) setClass(b, "is-current", b.dataset.mode === mode);
  }

  // ---- rendering: events --------------------------------------------------------------------
  function fmtVal(v) {
    if (v === null || v === undefined) return "none";
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(1);
    if (Array.isArray(v)) return v.length ? v.join(", ") : "none";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }
  function describe(e) {
    const d = e.data || {};
    switch (e.kind) {
      case "state": return `${enumText(d.from_state)} → ${enumText(d.to_state)}${d.reason ? " · " + d.reason : ""}`;
      case "fault": return d.raised ? `raised ${fmtVal(d.raised)}` : `cleared ${fmtVal(d.cleared)}${d.active && d.active.length ? " · still " + fmtVal(d.active) : ""}`;
      case "audit": {
        const what = d.what === "setpoint" ? `set-point ${fmtVal(d.old)} → ${fmtVal(d.new)} W${d.ttl_s ? " for " + fmtVal(d.ttl_s) + " s" : ""}`
          : d.what === "release" ? `release set-point → mode ${fmtVal(d.new_mode)}` : `mode ${fmtVal(d.old)} → ${fmtVal(d.new)}`;
        return `${fmtVal(d.who)} via ${fmtVal(d.via)}: ${what} · ${fmtVal(d.result)}${d.message ? " (" + d.message + ")" : ""}`;
      }
      case "modbus": return d.connected ? `${fmtVal(d.device)} connected${d.where ? " · " + d.where : ""}` : `${fmtVal(d.device)} disconnected · ${fmtVal(d.reason)}`;
      case "alarm": return `${fmtVal(d.source)} ${fmtVal(d.level)} ${fmtVal(d.flag)} ${d.raised ? "raised" : "cleared"}`;
      default: return Object.entries(d).map(([k, v]) => `${k}=${fmtVal(v)}`).join(" ");
    }
  }
  /* A short explanation of a FAULT cause, from its prefix (the raw cause stays visible). */
  function causeWhy(c) {
    const [kind, what] = [c.split(":")[0], c.slice(c.indexOf(":") + 1)];
    switch (kind) {
      case "stale": return `no fresh ${what.replace(/_(w|pct|v|a|degc)$/, "").replace(/_/g, " ")} reading`;
      case "worker_dead": return `the ${what} worker thread died`;
      case "worker_stalled": return `the ${what} worker stopped beating`;
      case "bms_protection": case "bms": return "the BMS raised a protection alarm";
      default: return "";
    }
  }
  function renderEvents() {
    const shown = st.events.slice(-EVENTS_SHOWN).reverse();
    const items = shown.map((e) => {
      const row = document.createElement("li");
      row.setAttribute("data-seq", e.seq);
      row.setAttribute("data-kind", e.kind);
      if (e.data && e.data.result === "refused") row.className = "refused";
      const t = document.createElement("span"); t.className = "t"; t.textContent = clock(e.ts);
      const k = document.createElement("span"); k.className = `k k-${e.kind.replace(/[^a-z0-9_-]/gi, "")}`; k.textContent = e.kind;
      const d = document.createElement("span"); d.className = "d"; d.textContent = describe(e);
      row.append(t, k, d);
      return row;
    });
    const ul = $("events");
    const key = shown.map((e) => e.seq).join(",");
    if (ul.dataset.key !== key) {
      ul.dataset.key = key;
      ul.replaceChildren(...(items.length ? items : [li("no events in the last hour", "empty")]));
    }
    setText($("events-note"), st.events.length ? `${st.events.length} in view · newest first` : "");
  }

  // ---- rendering: chart ---------------------------------------------------------------------
  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function makeChart() {
    const el = $("chart");
    if (typeof uPlot !== "function") { setText($("chart-note"), "chart library missing"); return null; }
    const timeAxis = (u, splits) => {
      const span = u.scales.x.max - u.scales.x.min;
      return splits.map((ts) => new Date(ts * 1000).toLocaleTimeString([], span < 600
        ? { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false } : { hour: "2-digit", minute: "2-digit", hour12: false }));
    };
    const kwAxis = (u, vals) => vals.map((v) => (v === null ? "" : v.toFixed(Math.abs(v) < 10 ? 1 : 0)));
    const opts = {
      width: Math.max(200, el.clientWidth),
      height: chartHeight(),
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      // x: at least a minute wide, so a short history still reads as a time axis
      scales: { x: { time: true, range: (u, lo, hi) => [Math.min(lo, hi - 60), hi] }, kw: { auto: true }, pct: { range: [0, 100] } },
      axes: [
        { stroke: "#7a8696", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#e2e7ee" }, values: timeAxis, space: 70 },
        { scale: "kw", label: "kW", stroke: "#7a8696", grid: { stroke: "#eef1f5" }, ticks: { stroke: "#e2e7ee" }, values: kwAxis, size: 48 },
        { scale: "pct", label: "SOC %", side: 1, stroke: "#7a8696", grid: { show: false }, ticks: { stroke: "#e2e7ee" }, size: 48 },
      ],
      series: [
        { value: (u, v) => (v === null ? "—" : clock(v)) },
        { label: "Grid", scale: "kw", stroke: css("--c-grid"), width: 1.5, value: (u, v) => (v === null ? "—" : `${v.toFixed(2)} kW`) },
        { label: "PV", scale: "kw", stroke: css("--c-pv"), fill: "rgba(224,161,0,.10)", width: 1.5, value: (u, v) => (v === null ? "—" : `${v.toFixed(2)} kW`) },
        { label: "Load", scale: "kw", stroke: css("--c-load"), width: 1.5, value: (u, v) => (v === null ? "—" : `${v.toFixed(2)} kW`) },
        { label: "Battery", scale: "kw", stroke: css("--c-battery"), width: 1.5, value: (u, v) => (v === null ? "—" : `${v.toFixed(2)} kW`) },
        { label: "SOC", scale: "pct", stroke: css("--c-soc"), width: 2, dash: [6, 4], value: (u, v) => (v === null ? "—" : `${v.toFixed(1)} %`) },
      ],
    };
    const u = new uPlot(opts, chartData(), el);
    if (typeof ResizeObserver === "function") {
      new ResizeObserver(() => {
        const w = Math.max(200, el.clientWidth), h = chartHeight();
        if (w !== u.width || h !== u.height) u.setSize({ width: w, height: h });
      }).observe(el);
    }
    return u;
  }
  function chartHeight() { return window.matchMedia("(max-width: 700px)").matches ? 220 : 340; }
  function chartData() { const R = st.rows; return [R.ts, R.grid, R.pv, R.load, R.battery, R.soc]; }
  function renderChart() {
    if (!st.chart) st.chart = makeChart();
    if (!st.chart) return;
    st.chart.setData(chartData());
    if (st.rows.ts.length && st.chart.cursor.left < 0) st.chart.setLegend({ idx: st.rows.ts.length - 1 }); // latest values when not hovering
    setAttr($("chart"), "data-points", st.rows.ts.length);
    const R = st.rows;
    const empty = ![R.grid, R.pv, R.load, R.battery, R.soc].some((a) => a.some((v) => v !== null));
    setHidden($("chart-empty"), !empty);
    setText($("chart-note"), st.source === "context"
      ? "no store: history starts when this page opened"
      : `${st.rows.ts.length} points · grid + import, battery + discharge`);
  }

  // ---- connection / stale -------------------------------------------------------------------
  function renderConn() {
    const conn = $("conn");
    const ageMs = st.lastOkAt ? Date.now() - st.lastOkAt : Infinity;
    const stale = ageMs > STALE_AFTER_MS;
    let state, text;
    if (st.locked) { state = "stale"; text = "token needed to read"; }
    else if (!st.lastOkAt) { state = st.lastError ? "stale" : "connecting"; text = st.lastError ? "stale · no answer" : "connecting…"; }
    else if (stale) { state = "stale"; text = `stale · no answer for ${age(ageMs / 1000)}`; }
    else { state = "live"; text = ageMs < 1500 ? "live · updated just now" : `live · updated ${age(ageMs / 1000)} ago`; }
    setAttr(conn, "data-state", state);
    setText($("conn-text"), text);
    const showBanner = st.locked || (stale && (st.lastOkAt > 0 || !!st.lastError));
    setHidden($("stale-banner"), !showBanner);
    setText($("stale-text"), st.locked
      ? "this EMS needs a token to read (api.protect_reads); sign in with a viewer or operator token."
      : `the EMS API is not answering${st.lastError ? " (" + st.lastError + ")" : ""}; the values below are the last ones received${st.lastOkAt ? " " + age(ageMs / 1000) + " ago" : ""}.`);
    setClass(document.body, "is-stale", showBanner);
  }

  // ---- operator actions ---------------------------------------------------------------------
  function renderAuth() {
    const has = !!token();
    setText($("token-button"), has ? "Sign out" : "Operator sign-in");
    setText($("ops-who"), has ? "signed in · token kept in this tab only" : "sign in to change the mode");
    setClass($("ops"), "locked", !has);
    for (const b of $("ops").querySelectorAll("button")) b.disabled = !has;
  }
  function showResult(ok, text) {
    const el = $("op-result");
    el.className = `result ${ok ? "ok" : "err"}`;
    el.textContent = `${clock(Date.now() / 1000)} ${text}`;
  }
  async function act(label, method, path, opts) {
    if (!token()) { openTokenDialog(); return; }
    showResult(true, `${label}: sending…`);
    const r = await api(method, path, opts);
    if (r.ok) {
      showResult(true, `${label}: accepted · ${r.data.note || ""}`.trim());
    } else {
      showResult(false, `${label}: refused · ${r.error}`);
    }
    tick();
  }
  function openTokenDialog() {
    const dlg = $("token-dialog");
    $("token-input").value = "";
    if (typeof dlg.showModal === "function") dlg.showModal(); else dlg.setAttribute("open", "");
    $("token-input").focus();
  }
  function closeTokenDialog() { const dlg = $("token-dialog"); if (dlg.open) dlg.close(); }

  function wire() {
    $("token-button").addEventListener("click", () => {
      if (token()) { setToken(""); showResult(true, "signed out; the token is forgotten"); } else openTokenDialog();
    });
    $("token-cancel").addEventListener("click", closeTokenDialog);
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("token-input").value.trim();
      $("token-input").value = "";
      closeTokenDialog();
      if (t) { setToken(t); $("op-result").textContent = ""; tick(); }
    });
    for (const b of $("mode-buttons").querySelectorAll("button[data-mode]")) {
      b.addEventListener("click", () => act(`mode ${b.dataset.mode}`, "PUT", "/mode", { body: { mode: b.dataset.mode } }));
    }
    $("sp-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const power = Number($("sp-power").value), ttl = Number($("sp-ttl").value);
      const body = { power_w: power, ttl_s: ttl, reason: $("sp-reason").value.trim() || "dashboard" };
      act(`set-point ${signedKw(power)} for ${ttl} s`, "PUT", "/setpoint", { body });
    });
    $("sp-release").addEventListener("click", () => act("release", "DELETE", "/setpoint"));
    setInterval(() => { renderConn(); }, 1000);
  }

  if (!MODES.every((m) => document.querySelector(`button[data-mode="${m}"]`))) throw new Error("mode buttons missing");
  wire();
  renderAuth();
  tick();
  stream();
})();
