// Room display: who is speaking in one room, live. Plain JS, no build step.
//
// Connects to /v1/events?room=NAME on the same host (JSON text frames; ?token= from the
// page URL is passed on). "Now" comes from the room_state extension message (speakers
// merged over the room's microphones); the timeline from final speaker events and the
// snapshot's recent finals. Reconnects by itself (back-off 0.5 s .. 5 s).
// ?servers=HOST:PORT,wss://HOST2,... lists the servers of a cluster (default: this
// page's own host): a lost or refused connection moves to the next one at once, where
// the page gets a new snapshot; the back-off starts after a whole round has failed.
// Every name from the server is written with textContent, never as HTML.
"use strict";

(() => {
  const WINDOW_S = 180;            // timeline span
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 5000;
  const HOLD_MS = 2500;            // keep the last confirmed speaker up after a turn ends
  const MAX_CANDIDATES = 5;
  const MERGE_GAP_S = 0.4;         // bars of one person closer than this are drawn as one

  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const room = roomFromLocation();
  const servers = serverList(params.get("servers"));

  const $ = (id) => document.getElementById(id);
  const els = {
    roomName: $("room-name"),
    status: $("status"),
    clock: $("clock"),
    now: $("now"),
    nowLabel: $("now-label"),
    nowName: $("now-name"),
    nowDetail: $("now-detail"),
    nowOthers: $("now-others"),
    candidates: $("candidates"),
    candidatesBody: document.querySelector("#candidates tbody"),
    candidatesCaption: $("candidates-caption"),
    timeline: $("timeline"),
  };

  const state = {
    speaking: [],          // latest room_state.speaking
    turns: new Map(),      // "stream:segment" -> {key, id, name, startTs, endTs} (server time)
    live: new Map(),       // row key -> server time the live turn started
    names: new Map(),      // person id -> latest name
    lastFinal: null,       // latest final speaker event
    lastFinalAt: 0,        // client ms it arrived
    offset: null,          // client clock - server clock (s), min over this connection
    connected: false,
  };

  let ws = null;
  let backoff = BACKOFF_MIN_MS;
  let retryTimer = null;
  let retrying = false;    // a connection was lost (or never made): show "reconnecting"
  let serverIndex = 0;     // servers[serverIndex] is the one in use
  let failures = 0;        // failed or lost connections since the last snapshot

  // The websocket base URLs of ?servers= (comma-separated HOST:PORT, ws(s):// or
  // http(s):// addresses; a bare HOST:PORT gets this page's scheme), or this page's host.
  function serverList(text) {
    const pageScheme = location.protocol === "https:" ? "wss:" : "ws:";
    const schemes = { "ws:": "ws:", "wss:": "wss:", "http:": "ws:", "https:": "wss:" };
    const list = [];
    for (const part of (text || "").split(",").map((s) => s.trim()).filter(Boolean)) {
      let url = null;
      try { url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(part) ? part : `${pageScheme}//${part}`); } catch (_) { /* below */ }
      const scheme = url && schemes[url.protocol];
      if (!scheme || !url.host) { console.warn(`servers: ignoring ${part}`); continue; }
      const base = `${scheme}//${url.host}${url.pathname.replace(/\/+$/, "")}`;
      if (!list.includes(base)) list.push(base);
    }
    return list.length ? list : [`${pageScheme}//${location.host}`];
  }

  function roomFromLocation() {
    const m = location.pathname.match(/^\/room\/(.+)$/);
    let name = m ? m[1] : (params.get("room") || "");
    try { name = decodeURIComponent(name); } catch (_) { /* keep it raw */ }
    return name.replace(/\/+$/, "");
  }

  // -- helpers -------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function hue(key) {
    let h = 2166136261;
    for (let i = 0; i < key.length; i++) {
      h ^= key.charCodeAt(i);
      h = Math.imul(h, 16777619);
    }
    return ((h >>> 0) % 360);
  }

  function personColour(person) {
    return person ? `hsl(${hue(person.id)} 70% 62%)` : "var(--warn)";
  }

  function nameOf(person) {
    if (!person) return "Unknown speaker";
    return state.names.get(person.id) || person.name || person.id;
  }

  function fmtDistance(d) {
    return typeof d === "number" ? d.toFixed(2) : "–";
  }

  function fmtSeconds(s) {
    if (s < 60) return `${Math.round(s)} s`;
    const m = Math.floor(s / 60);
    return `${m} min ${String(Math.round(s % 60)).padStart(2, "0")}`;
  }

  function serverNow() {
    return Date.now() / 1000 - (state.offset ?? 0);
  }

  function noteServerTime(ts) {
    if (typeof ts !== "number") return;
    const sample = Date.now() / 1000 - ts;  // offset + delivery delay; the minimum is best
    if (state.offset === null || sample < state.offset) state.offset = sample;
  }

  // -- connection ------------------------------------------------------------------------

  function eventsUrl() {
    const q = new URLSearchParams({ room });
    if (token) q.set("token", token);
    return `${servers[serverIndex]}/v1/events?${q.toString()}`;
  }

  function setStatus(kind, text) {
    els.status.className = `badge ${kind}`;
    els.status.textContent = text;
    document.body.classList.toggle("offline", kind !== "live");
  }

  function connect() {
    retryTimer = null;
    const where = servers.length > 1 ? ` to ${new URL(servers[serverIndex]).host}` : "";
    if (retrying) setStatus("reconnecting", `reconnecting${where}…`);
    else setStatus("connecting", `connecting${where}…`);
    els.status.dataset.server = servers[serverIndex];
    els.status.title = `server ${servers[serverIndex]}`;
    let socket;
    try {
      socket = new WebSocket(eventsUrl());
    } catch (err) {
      scheduleReconnect(String(err));
      return;
    }
    ws = socket;
    state.offset = null;
    socket.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      let message;
      try { message = JSON.parse(ev.data); } catch (_) { return; }
      if (message && typeof message === "object") handle(message);
    };
    socket.onclose = (ev) => {
      if (ws !== socket) return;
      ws = null;
      const reason = ev.code === 1008 && ev.reason ? ev.reason : "";
      scheduleReconnect(reason);
    };
    socket.onerror = () => { /* a close follows */ };
  }

  function scheduleReconnect(reason) {
    retrying = true;
    state.connected = false;
    state.speaking = [];
    state.live.clear();
    failures += 1;
    if (servers.length > 1) {
      serverIndex = (serverIndex + 1) % servers.length;
      if (failures % servers.length !== 0) {  // another server to try at once
        const lost = servers[(serverIndex + servers.length - 1) % servers.length];
        console.info(`room: ${lost} lost${reason ? ` (${reason})` : ""}; moving to ${servers[serverIndex]}`);
        retryTimer = setTimeout(connect, 0);
        render();
        return;
      }
    }
    const wait = backoff;
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    const why = reason ? ` (${reason})` : "";
    setStatus("reconnecting", `reconnecting in ${(wait / 1000).toFixed(1)} s${why}`);
    retryTimer = setTimeout(connect, wait);
    render();
  }

  // -- messages ----------------------------------------------------------------------------

  function handle(m) {
    noteServerTime(m.ts);
    switch (m.type) {
      case "snapshot":
        state.connected = true;
        retrying = false;
        backoff = BACKOFF_MIN_MS;
        failures = 0;
        setStatus("live", "live");
        for (const e of Array.isArray(m.recent) ? m.recent : []) addFinal(e, false);
        break;
      case "room_state":
        state.speaking = Array.isArray(m.speaking) ? m.speaking : [];
        trackLive();
        break;
      case "speaker":
        if (m.person && m.person.id && m.person.name) state.names.set(m.person.id, m.person.name);
        if (m.final) addFinal(m, true);
        break;
      case "error":
        setStatus("reconnecting", `error: ${m.message || m.code || "unknown"}`);
        break;
      default:
        return;  // speech_start / speech_end: "now" follows room_state
    }
    render();
  }

  function rowKey(person) {
    return person && person.id ? `p:${person.id}` : "unknown";
  }

  function addFinal(e, live) {
    if (!e || e.type !== "speaker" || !e.final) return;
    const key = `${e.stream}:${e.segment}`;
    const dur = Math.max(0, Number(e.end) - Number(e.start)) || 0;
    const endTs = typeof e.ts === "number" ? e.ts : serverNow();
    if (e.person && e.person.id && e.person.name) state.names.set(e.person.id, e.person.name);
    state.turns.set(key, {
      key: rowKey(e.person),
      person: e.person || null,
      startTs: endTs - dur,
      endTs,
    });
    if (!state.lastFinal || endTs >= (state.lastFinal.ts || 0)) {
      state.lastFinal = e;
      state.lastFinalAt = live ? Date.now() : 0;
    }
  }

  function trackLive() {
    // Rows that are speaking now get a growing bar until their final arrives.
    const now = serverNow();
    const seen = new Set();
    for (const entry of state.speaking) {
      if (entry.pending) continue;
      const key = rowKey(entry.person);
      seen.add(key);
      if (!state.live.has(key)) {
        const dur = Math.max(0, Number(entry.end) - Number(entry.start)) || 0;
        state.live.set(key, { startTs: now - dur, person: entry.person || null });
      }
    }
    for (const key of [...state.live.keys()]) if (!seen.has(key)) state.live.delete(key);
  }

  // -- rendering -------------------------------------------------------------------------------

  function render() {
    renderNow();
    renderCandidates();
    renderTimeline();
  }

  function classOf(entry) {
    if (entry.pending) return "pending";
    if (!entry.person) return "unknown";
    return entry.final ? "final" : "provisional";
  }

  function renderNow() {
    const list = state.speaking;
    const now = els.now;
    now.dataset.count = String(list.length);
    els.nowDetail.replaceChildren();
    els.nowOthers.replaceChildren();
    now.classList.remove("now-speaker", "held");

    let primary = list[0] || null;
    let held = false;
    if (!primary && state.connected && state.lastFinal && state.lastFinalAt
        && Date.now() - state.lastFinalAt < HOLD_MS) {
      // The turn just ended: show its confirmed decision for a moment.
      const f = state.lastFinal;
      primary = { person: f.person, distance: f.distance, final: true, pending: false,
        candidates: f.candidates || [], mics: [f.mic] };
      held = true;
    }

    if (!primary) {
      now.className = "silent";
      now.style.removeProperty("--person");
      els.nowLabel.textContent = state.connected ? "Nobody is speaking" : "Offline";
      els.nowName.textContent = state.connected ? "Silence" : "—";
      const f = state.lastFinal;
      if (f && state.connected) {
        const ago = Math.max(0, serverNow() - (f.ts || serverNow()));
        addDetail("last", `${nameOf(f.person)}, ${fmtSeconds(ago)} ago`);
      }
      return;
    }

    const kind = classOf(primary);
    now.className = kind;
    if (!held) now.classList.add("now-speaker");
    else now.classList.add("held");
    now.style.setProperty("--person", kind === "pending" ? "var(--faint)" : personColour(primary.person));
    els.nowLabel.textContent = held ? "Just spoke" : (kind === "pending" ? "Someone is speaking" : "Speaking now");
    if (kind === "pending") {
      els.nowName.textContent = "Listening…";
    } else {
      els.nowName.textContent = nameOf(primary.person);
    }
    if (kind === "unknown") {
      const c = (primary.candidates || [])[0];
      if (c) addDetail("nearest", `${c.name} (${fmtDistance(c.distance)})`);
      addDetail("", "not enrolled");
    } else if (kind !== "pending") {
      addDetail("distance", fmtDistance(primary.distance));
      addDetail("", kind === "final" ? "confirmed" : "guess, still listening");
    }
    const mics = (primary.mics || []).slice().sort();
    if (mics.length) addDetail(mics.length > 1 ? "mics" : "mic", mics.join(", "));

    for (const entry of list.slice(1)) {
      const k = classOf(entry);
      const li = el("li", `now-speaker ${k}`, k === "pending" ? "Listening…" : nameOf(entry.person));
      li.style.setProperty("--person", personColour(entry.person));
      els.nowOthers.appendChild(li);
    }
  }

  function addDetail(label, value) {
    const span = el("span", "item");
    if (label) span.appendChild(el("span", "label", `${label} `));
    span.appendChild(el("span", "value", value));
    els.nowDetail.appendChild(span);
  }

  function renderCandidates() {
    const primary = state.speaking.find((e) => !e.pending && (e.candidates || []).length);
    let source = primary;
    let caption = primary ? "now" : "";
    if (!source && state.lastFinal && (state.lastFinal.candidates || []).length) {
      source = state.lastFinal;
      caption = "last turn";
    }
    els.candidatesCaption.textContent = caption;
    els.candidates.classList.toggle("stale", !primary);
    const body = els.candidatesBody;
    body.replaceChildren();
    const rows = source ? (source.candidates || []).slice(0, MAX_CANDIDATES) : [];
    if (!rows.length) {
      const tr = el("tr", "empty");
      const td = el("td", "", "Nobody enrolled yet, or nobody has spoken.");
      td.colSpan = 3;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    const matchId = source.person ? source.person.id : null;
    for (const c of rows) {
      const tr = el("tr", c.id === matchId ? "candidate match" : "candidate");
      tr.dataset.person = String(c.id);
      tr.style.setProperty("--person", personColour(c));
      tr.appendChild(el("td", "name", state.names.get(c.id) || c.name));
      const closeness = el("td", "closeness");
      const meter = el("div", "meter");
      const fill = el("span");
      const d = typeof c.distance === "number" ? c.distance : Math.SQRT2;
      fill.style.width = `${Math.max(2, Math.min(100, (1 - d / Math.SQRT2) * 100)).toFixed(1)}%`;
      meter.appendChild(fill);
      closeness.appendChild(meter);
      tr.appendChild(closeness);
      tr.appendChild(el("td", "distance", fmtDistance(c.distance)));
      body.appendChild(tr);
    }
  }

  function renderTimeline() {
    const now = serverNow();
    const from = now - WINDOW_S;
    // group turns (and live bars) by row
    const rows = new Map();
    const row = (key, person) => {
      let r = rows.get(key);
      if (!r) {
        r = { key, person, spans: [], first: Infinity };
        rows.set(key, r);
      }
      if (person) r.person = person;
      return r;
    };
    for (const [id, t] of state.turns) {
      if (t.endTs < from - 5) { state.turns.delete(id); continue; }
      const r = row(t.key, t.person);
      r.spans.push([t.startTs, t.endTs, false]);
      r.first = Math.min(r.first, t.startTs);
    }
    for (const [key, l] of state.live) {
      const r = row(key, l.person);
      r.spans.push([l.startTs, now, true]);
      r.first = Math.min(r.first, l.startTs);
    }
    const ordered = [...rows.values()].sort((a, b) => {
      if ((a.key === "unknown") !== (b.key === "unknown")) return a.key === "unknown" ? 1 : -1;
      return a.first - b.first;
    });

    const container = els.timeline;
    container.replaceChildren();
    if (!ordered.length) {
      container.appendChild(el("div", "tl-empty", "No turns yet."));
      return;
    }
    for (const r of ordered) {
      const rowEl = el("div", r.key === "unknown" ? "tl-row unknown" : "tl-row");
      rowEl.dataset.person = r.key === "unknown" ? "unknown" : r.person.id;
      rowEl.style.setProperty("--person", personColour(r.person));
      const label = el("div", "tl-name", r.person ? nameOf(r.person) : "Unknown");
      label.title = r.person ? nameOf(r.person) : "Unknown speakers (nobody enrolled was close enough)";
      rowEl.appendChild(label);
      const track = el("div", "tl-track");
      let total = 0;
      for (const [s, e, live] of mergeSpans(r.spans)) {
        const a = Math.max(s, from);
        const b = Math.min(e, now);
        if (b <= a) continue;
        total += b - a;
        const bar = el("div", live ? "tl-bar live" : "tl-bar");
        bar.style.left = `${((a - from) / WINDOW_S * 100).toFixed(3)}%`;
        bar.style.width = `${((b - a) / WINDOW_S * 100).toFixed(3)}%`;
        track.appendChild(bar);
      }
      rowEl.appendChild(track);
      rowEl.appendChild(el("div", "tl-total", fmtSeconds(total)));
      container.appendChild(rowEl);
    }
    const axis = el("div", "tl-axis");
    axis.appendChild(el("span"));
    const ticks = el("div", "ticks");
    for (let m = WINDOW_S / 60; m >= 0; m--) ticks.appendChild(el("span", "", m ? `−${m} min` : "now"));
    axis.appendChild(ticks);
    axis.appendChild(el("span"));
    container.appendChild(axis);
  }

  function mergeSpans(spans) {
    // Two mics hearing one turn give two overlapping finals: draw their union.
    const sorted = spans.slice().sort((x, y) => x[0] - y[0]);
    const out = [];
    for (const [s, e, live] of sorted) {
      const last = out[out.length - 1];
      if (last && s <= last[1] + MERGE_GAP_S && last[2] === live) {
        last[1] = Math.max(last[1], e);
      } else {
        out.push([s, e, live]);
      }
    }
    return out;
  }

  function tick() {
    const d = new Date();
    els.clock.textContent = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
    render();
  }

  // -- start -------------------------------------------------------------------------------------

  if (!room) {
    els.roomName.textContent = "no room";
    setStatus("reconnecting", "open /room/NAME");
    els.nowLabel.textContent = "No room given";
    els.nowName.textContent = "—";
    return;
  }
  els.roomName.textContent = room;
  document.title = `${room} · who is speaking`;
  tick();
  setInterval(tick, 500);
  connect();
})();
