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
//
// Rosters: in a room with a roster, speaker events carry "scope" ("roster" or "all");
// a person named with scope "all" is a visitor (named from outside the roster) and gets
// a small "visitor" tag. Without "scope" nothing changes. The collapsed "Who is
// expected here" panel reads and edits the roster over /v1/api ("rooms", "people",
// "set_room"; the admin role): with a token the API refuses, the display goes on and
// the panel says why (an admin token can be typed in; it is kept in memory only).
// A gallery may hold a million people, so the panel never asks for everyone: its edit
// list shows one page of the people its filter finds ("people" with "query" and
// "limit"; ?page_size=N changes the page) plus everyone checked; the members' names
// come from the snapshot's "roster" ([{id, name}]), live events, and look-ups by id.
"use strict";

(() => {
  const WINDOW_S = 180;            // timeline span
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 5000;
  const HOLD_MS = 2500;            // keep the last confirmed speaker up after a turn ends
  const MAX_CANDIDATES = 5;
  const MERGE_GAP_S = 0.4;         // bars of one person closer than this are drawn as one
  const API_TIMEOUT_MS = 10000;    // a /v1/api round trip for the roster panel
  const ROSTER_REFRESH_MS = 5 * 60 * 1000;  // re-read the roster while the API answers
  const MAX_SCOPES = 200;          // streams whose latest scope is remembered
  const SEARCH_DELAY_MS = 300;     // typing in the filter pauses this long before a search
  const MAX_LOOKUPS = 100;         // roster members' names looked up by id in one read
  const NAMES_SHOWN = 100;         // members named in the panel (then "and N more")

  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const room = roomFromLocation();
  const servers = serverList(params.get("servers"));
  const MATCHES_SHOWN = pageSize(params.get("page_size"), 50);  // the edit list's page

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
    roster: $("roster"),
    rosterSummary: $("roster-summary"),
    rosterState: $("roster-state"),
    rosterNames: $("roster-names"),
    rosterEdit: $("roster-edit"),
    rosterFilter: $("roster-filter"),
    rosterPeople: $("roster-people"),
    rosterMore: $("roster-more"),
    rosterSave: $("roster-save"),
    rosterRemove: $("roster-remove"),
    rosterToken: $("roster-token"),
    rosterTokenInput: $("roster-token-input"),
    rosterMessage: $("roster-message"),
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
    scopes: new Map(),     // stream id -> {id: person id or null, scope} of its latest speaker event
    personScope: new Map(),  // person id -> scope of the latest speaker event naming them
    snapshots: 0,          // snapshots received (a later one follows a reconnection)
  };

  const roster = {
    status: "loading",     // loading | ok | refused | error | unsupported
    people: undefined,     // this room's roster: ids, null (no roster), undefined (unknown)
    matches: [],           // one page of the people the filter finds [{id, name}], by name
    matchTotal: 0,         // how many it finds
    matchQuery: "",        // the filter those are for
    gone: new Set(),       // ids a look-up found no longer enrolled
    searches: 0,           // bumps on every search (drops stale replies)
    selected: new Set(),   // ids checked in the edit list
    adminToken: null,      // typed into the panel; used instead of the page's token
    reason: "",            // why the API refused or failed
    seenScope: false,      // a live event carried "scope": the room has a roster
    loading: null,         // the running load (a promise)
    loadedAt: 0,
    confirmRemove: false,
    selectedOrder: [],     // the ids of the last save (to name an unknown one)
    dirty: false,          // checks changed since the roster was read or saved
    drawn: "",             // what the edit list shows (to redraw only on a change)
    loads: 0,              // finished reads (also in #roster's data-loads, for tests)
    loadingPeople: false,  // the running read asks for "people" too (the panel is open)
  };

  let ws = null;
  let backoff = BACKOFF_MIN_MS;
  let retryTimer = null;
  let retrying = false;    // a connection was lost (or never made): show "reconnecting"
  let serverIndex = 0;     // servers[serverIndex] is the one in use
  let failures = 0;        // failed or lost connections since the last snapshot

  function pageSize(text, fallback) {
    const n = Number(text);
    return Number.isInteger(n) && n >= 1 && n <= 10000 ? n : fallback;
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
        for (const e of Array.isArray(m.recent) ? m.recent : []) {
          noteScope(e);
          addFinal(e, false);
        }
        // the roster's members with their names (an extension): names without asking
        for (const p of Array.isArray(m.roster) ? m.roster : []) {
          if (p && p.id && typeof p.name === "string") state.names.set(String(p.id), p.name);
        }
        if (Array.isArray(m.roster) && roster.status === "ok") renderRoster();
        state.snapshots += 1;
        // back after a lost connection: the roster may have changed meanwhile
        if (state.snapshots > 1 && roster.status !== "refused") loadRoster();
        break;
      case "room_state":
        state.speaking = Array.isArray(m.speaking) ? m.speaking : [];
        trackLive();
        break;
      case "speaker":
        if (m.person && m.person.id && m.person.name) state.names.set(m.person.id, m.person.name);
        noteScope(m);
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

  // Remember the scope of a speaker event (absent in rooms without a roster).
  function noteScope(e) {
    if (!e || e.type !== "speaker" || typeof e.scope !== "string") return;
    if (!roster.seenScope) {
      roster.seenScope = true;
      renderRoster();
    }
    const id = e.person && e.person.id ? e.person.id : null;
    if (typeof e.stream === "string") {
      state.scopes.delete(e.stream);  // re-inserted last: the oldest go first
      state.scopes.set(e.stream, { id, scope: e.scope });
      while (state.scopes.size > MAX_SCOPES) state.scopes.delete(state.scopes.keys().next().value);
    }
    if (id) state.personScope.set(id, e.scope);
  }

  // Named from outside the room's roster: scope "all" with a person (and, when the page
  // knows the roster, someone not on it).
  function isVisitor(person, scope) {
    if (!person || !person.id || scope !== "all") return false;
    return !(Array.isArray(roster.people) && roster.people.includes(person.id));
  }

  // The scope behind a room_state entry: the latest speaker event of one of its streams
  // naming the same person (else the latest event naming them anywhere in the room).
  function scopeOf(entry) {
    if (!entry || !entry.person || !entry.person.id) return undefined;
    for (const stream of entry.streams || []) {
      const s = state.scopes.get(stream);
      if (s && s.id === entry.person.id) return s.scope;
    }
    return state.personScope.get(entry.person.id);
  }

  function visitorTag() {
    const tag = el("span", "visitor-tag", "visitor");
    tag.title = "Named from outside this room's roster (under a stricter threshold)";
    return tag;
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
      scope: typeof e.scope === "string" ? e.scope : undefined,
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
        candidates: f.candidates || [], mics: [f.mic], scope: f.scope };
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
    const visitor = kind !== "pending" && kind !== "unknown"
      && isVisitor(primary.person, held ? primary.scope : scopeOf(primary));
    now.className = kind;
    if (visitor) now.classList.add("visitor");
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
      if (visitor) els.nowDetail.appendChild(visitorTag());
      addDetail("distance", fmtDistance(primary.distance));
      addDetail("", kind === "final" ? "confirmed" : "guess, still listening");
    }
    const mics = (primary.mics || []).slice().sort();
    if (mics.length) addDetail(mics.length > 1 ? "mics" : "mic", mics.join(", "));

    for (const entry of list.slice(1)) {
      const k = classOf(entry);
      const li = el("li", `now-speaker ${k}`, k === "pending" ? "Listening…" : nameOf(entry.person));
      li.style.setProperty("--person", personColour(entry.person));
      if (k !== "pending" && isVisitor(entry.person, scopeOf(entry))) {
        li.classList.add("visitor");
        li.appendChild(visitorTag());
      }
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
        r = { key, person, spans: [], first: Infinity, lastTs: -Infinity, scope: undefined };
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
      if (t.endTs >= r.lastTs) {
        r.lastTs = t.endTs;
        r.scope = t.scope;
      }
    }
    for (const [key, l] of state.live) {
      const r = row(key, l.person);
      r.spans.push([l.startTs, now, true]);
      r.first = Math.min(r.first, l.startTs);
      // a first turn still going: the scope of the person's latest event
      if (r.lastTs === -Infinity && l.person && l.person.id) r.scope = state.personScope.get(l.person.id);
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
      if (r.key !== "unknown" && isVisitor(r.person, r.scope)) rowEl.classList.add("visitor");
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

  // -- roster: who is expected here (/v1/api, admin role) ---------------------------------------

  let apiSeq = 0;

  class ApiError extends Error {
    constructor(kind, message) {
      super(message);
      this.kind = kind;  // "auth": the API refused the token; "network": no answer
    }
  }

  function apiToken() {
    return roster.adminToken || token;
  }

  // Send `messages` on one new /v1/api connection to `base`; resolves with their replies
  // (an "error" reply too), in order. Rejects with an ApiError.
  function apiOnce(base, messages) {
    return new Promise((resolve, reject) => {
      const q = apiToken() ? `?token=${encodeURIComponent(apiToken())}` : "";
      let socket;
      try {
        socket = new WebSocket(`${base}/v1/api${q}`);
      } catch (err) {
        reject(new ApiError("network", String(err)));
        return;
      }
      const replies = new Map();
      let done = false;
      const finish = (err) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        try { socket.close(); } catch (_) { /* closing already */ }
        if (err) reject(err);
        else resolve(messages.map((m) => replies.get(m.id)));
      };
      const timer = setTimeout(() => finish(new ApiError("network", "no answer")), API_TIMEOUT_MS);
      socket.onopen = () => {
        for (const m of messages) socket.send(JSON.stringify(m));
      };
      socket.onmessage = (ev) => {
        if (typeof ev.data !== "string") return;
        let reply;
        try { reply = JSON.parse(ev.data); } catch (_) { return; }
        if (!reply || !messages.some((m) => m.id === reply.id)) return;
        replies.set(reply.id, reply);
        if (replies.size === messages.length) finish(null);
      };
      socket.onclose = (ev) => {
        if (ev.code === 1008 && (ev.reason === "unauthorized" || ev.reason === "forbidden")) {
          finish(new ApiError("auth", ev.reason));
        } else {
          finish(new ApiError("network", `the connection closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ""})`));
        }
      };
      socket.onerror = () => { /* a close follows */ };
    });
  }

  // The servers of ?servers=, the one the display uses first; a server that does not
  // answer passes the requests to the next one (a refused token stops at once).
  async function apiCall(requests) {
    const messages = requests.map((r) => ({ ...r, id: `room-${++apiSeq}` }));
    let last = null;
    for (let i = 0; i < servers.length; i++) {
      const base = servers[(serverIndex + i) % servers.length];
      try {
        return await apiOnce(base, messages);
      } catch (err) {
        if (err.kind === "auth") throw err;
        last = err;
      }
    }
    throw last || new ApiError("network", "no server");
  }

  function nameOfId(id) {
    return state.names.get(id) || id;
  }

  function refusalText(reason) {
    const who = roster.adminToken ? "The admin token you typed" : (token ? "This page's token" : "Without a token, the page");
    const why = reason === "unauthorized" ? "is not accepted" : "may not use the people API (it needs the admin role)";
    return `${who} ${why}: who is expected here can be seen and changed with an admin token. The display works as before.`;
  }

  function apiErrorText(reply) {
    if (reply.code === "unknown_person") {
      const id = roster.selectedOrder.find((pid) => String(reply.message || "").includes(pid));
      const who = id ? nameOfId(id) : "someone checked";
      return `${who} is no longer enrolled (deleted meanwhile?); the list was reloaded. Check it and save again.`;
    }
    if (reply.code === "unknown_type") return "this server does not know room rosters (it needs an update).";
    return reply.message || reply.code || "unknown error";
  }

  function setRosterMessage(kind, text) {
    els.rosterMessage.className = kind || "";
    els.rosterMessage.textContent = text || "";
  }

  // Names of `ids` not known yet (or all of them, `recheck`): one "people" request by id
  // each (at most MAX_LOOKUPS, on one connection). Who is found gets a name, who is not
  // is marked gone. Throws as apiCall does.
  async function lookUp(ids, recheck) {
    const todo = [...new Set(ids)]
      .filter((id) => recheck || (!state.names.has(id) && !roster.gone.has(id)))
      .slice(0, MAX_LOOKUPS);
    if (!todo.length) return;
    const replies = await apiCall(todo.map((id) => ({ type: "people", query: id, limit: 10 })));
    todo.forEach((id, i) => {
      const reply = replies[i];
      if (!reply || reply.type !== "people" || !Array.isArray(reply.people)) return;
      const p = reply.people.find((x) => x && String(x.id) === id);
      if (p) {
        state.names.set(id, String(p.name));
        roster.gone.delete(id);
      } else {
        roster.gone.add(id);
      }
    });
  }

  // A "people" reply for the filter `query`: the edit list's page of matches.
  function setMatches(reply, query) {
    const people = reply.people.map((x) => ({ id: String(x.id), name: String(x.name) }));
    for (const x of people) {
      state.names.set(x.id, x.name);
      roster.gone.delete(x.id);
    }
    roster.matches = people.sort((a, b) => a.name.localeCompare(b.name));
    roster.matchTotal = Number(reply.total ?? people.length);
    roster.matchQuery = query;
  }

  // Read the room's roster ("rooms"); with the panel open also the first page of the
  // people the filter finds and the names of the members ("people" by query and by id:
  // a display never fetches a large gallery, not even to show itself).
  function loadRoster() {
    const withPeople = els.roster.open;
    if (roster.loading) {
      return withPeople && !roster.loadingPeople ? roster.loading.then(loadRoster) : roster.loading;
    }
    if (roster.status !== "ok") {
      roster.status = "loading";
      renderRoster();
    }
    roster.loadingPeople = withPeople;
    roster.loading = (async () => {
      try {
        const query = els.rosterFilter.value.trim();
        const search = withPeople ? ++roster.searches : roster.searches;
        const requests = [{ type: "rooms" }];
        if (withPeople) requests.push({ type: "people", limit: MATCHES_SHOWN, query: query || null });
        const [rooms, people] = await apiCall(requests);
        if (!rooms || rooms.type !== "rooms") {
          roster.status = rooms && rooms.code === "unknown_type" ? "unsupported" : "error";
          roster.reason = rooms ? apiErrorText(rooms) : "no answer";
        } else {
          const mine = (Array.isArray(rooms.rooms) ? rooms.rooms : []).find((r) => r && r.room === room);
          roster.people = mine ? (mine.people || []).map(String) : null;
          if (people && people.type === "people" && Array.isArray(people.people) && search === roster.searches) {
            setMatches(people, query);
          }
          if (withPeople) {
            // the members' names (and, for checks not saved yet, who is still enrolled)
            await lookUp([...(roster.people || []), ...roster.selected], false);
          }
          roster.status = "ok";
          roster.reason = "";
          roster.loadedAt = Date.now();
          if (!roster.dirty) roster.selected = new Set(roster.people || []);
          else roster.selected = new Set([...roster.selected].filter((id) => !roster.gone.has(id)));
          roster.confirmRemove = false;
        }
      } catch (err) {
        roster.status = err.kind === "auth" ? "refused" : "error";
        roster.reason = err.kind === "auth" ? err.message : `the roster could not be read: ${err.message}`;
      } finally {
        roster.loading = null;
        roster.loads += 1;
        els.roster.dataset.loads = String(roster.loads);
      }
      renderRoster();
      render();  // the visitor tags depend on who is on the roster
    })();
    return roster.loading;
  }

  // What the edit list shows (to redraw it only on a change).
  function rosterListKey() {
    const others = [...roster.selected].filter((id) => !roster.matches.some((p) => p.id === id))
      .map((id) => [id, nameOfId(id), roster.gone.has(id)]).sort();
    return JSON.stringify([roster.matchQuery, roster.matchTotal, roster.matches, [...roster.selected].sort(), others]);
  }

  function checkItem(id, name, className) {
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = id;
    box.checked = roster.selected.has(id);
    box.addEventListener("change", () => {
      if (box.checked) roster.selected.add(id); else roster.selected.delete(id);
      roster.dirty = true;
      roster.confirmRemove = false;
      roster.drawn = rosterListKey();  // the box stays where it is until the list changes
      renderRosterButtons();
    });
    const label = el("label");
    label.appendChild(box);
    label.appendChild(el("span", "name", name));
    const li = el("li", className);
    li.dataset.person = id;
    li.appendChild(label);
    return li;
  }

  // The edit list: one page of the people the filter finds, then everyone checked who is
  // not among them (the room's members stay in sight). Redrawn only when something it
  // shows changed (a reload must not swap the box under the pointer).
  function drawRosterPeople() {
    const drawn = rosterListKey();
    if (drawn === roster.drawn) return;
    roster.drawn = drawn;
    const items = [];
    const listed = new Set();
    for (const p of roster.matches) {
      listed.add(p.id);
      items.push(checkItem(p.id, p.name));
    }
    const others = [...roster.selected].filter((id) => !listed.has(id))
      .sort((a, b) => nameOfId(a).localeCompare(nameOfId(b)));
    for (const id of others) {
      const gone = roster.gone.has(id);
      items.push(checkItem(id, gone ? `${nameOfId(id)} (not enrolled)` : nameOfId(id), gone ? "gone" : "member"));
    }
    const query = roster.matchQuery;
    if (!roster.matches.length) {  // where the people found would be
      items.unshift(el("li", "muted", query ? `Nobody enrolled matches “${query}”.` : "Nobody is enrolled yet."));
    }
    els.rosterPeople.replaceChildren(...items);
    const more = roster.matchTotal - roster.matches.length;
    els.rosterMore.hidden = more <= 0;
    els.rosterMore.textContent = more <= 0 ? "" : query
      ? `${roster.matches.length} of ${roster.matchTotal} people matching “${query}” shown: type more of the name.`
      : `${roster.matches.length} of ${roster.matchTotal} people shown: type a name (or an id) to find someone else.`;
  }

  // The filter: the server finds the people (a pause in typing starts the search).
  async function searchPeople() {
    const query = els.rosterFilter.value.trim();
    const search = ++roster.searches;
    try {
      const [reply] = await apiCall([{ type: "people", limit: MATCHES_SHOWN, query: query || null }]);
      if (search !== roster.searches) return;
      if (reply && reply.type === "people" && Array.isArray(reply.people)) {
        setMatches(reply, query);
        drawRosterPeople();
      } else {
        setRosterMessage("error", `The search failed: ${reply ? apiErrorText(reply) : "no answer"}`);
      }
    } catch (err) {
      if (search !== roster.searches) return;
      if (err.kind === "auth") {
        roster.status = "refused";
        roster.reason = err.message;
        renderRoster();
      } else {
        setRosterMessage("error", `The search failed: ${err.message}`);
      }
    }
  }

  function renderRosterButtons() {
    els.rosterSave.textContent = roster.people === null ? "Create roster" : "Save";
    els.rosterRemove.hidden = roster.people === null || roster.people === undefined;
    els.rosterRemove.textContent = roster.confirmRemove ? "Really remove? Everyone is matched again" : "Remove roster";
  }

  // The first NAMES_SHOWN members by name, then how many more.
  function namesText(ids) {
    const more = ids.length - NAMES_SHOWN;
    return ids.slice(0, NAMES_SHOWN).map(nameOfId).join(", ") + (more > 0 ? ` and ${more} more` : "");
  }

  function renderRoster() {
    const r = els.roster;
    const ok = roster.status === "ok";
    const list = ok && Array.isArray(roster.people) ? roster.people : null;
    r.dataset.state = roster.status === "ok" ? (list ? "set" : "none") : roster.status;
    let summary;
    let title;
    if (roster.status === "loading") {
      summary = "Roster…";
      title = "Loading who is expected here";
    } else if (list) {
      summary = list.length ? `Expected: ${list.length}` : "Expected: nobody";
      title = list.length ? `Expected here: ${namesText(list)}` : "Roster with nobody on it";
    } else if (ok) {
      summary = "No roster";
      title = "No roster: everyone enrolled is matched in this room";
    } else {
      summary = roster.seenScope ? "Roster set" : "Roster";
      title = "Who is expected here";
    }
    els.rosterSummary.textContent = summary;
    els.rosterSummary.title = title;

    let stateText;
    if (roster.status === "loading") stateText = "Loading…";
    else if (list && list.length) stateText = `${list.length === 1 ? "One person is" : `${list.length} people are`} expected here; anyone else is named only when their voice is closer, as a visitor:`;
    else if (list) stateText = "This room has a roster with nobody on it: everyone who speaks here is matched as a visitor.";
    else if (ok) stateText = "This room has no roster: everyone enrolled is matched here. Check people below to create one.";
    else if (roster.status === "refused") stateText = `${roster.seenScope ? "This room has a roster (the live events say so). " : ""}${refusalText(roster.reason)}`;
    else stateText = `${roster.seenScope ? "This room has a roster (the live events say so). " : ""}${roster.reason ? roster.reason[0].toUpperCase() + roster.reason.slice(1) : ""}`;
    els.rosterState.textContent = stateText;

    els.rosterNames.replaceChildren(...(list || []).slice(0, NAMES_SHOWN).map((id) => {
      const li = el("li", "", nameOfId(id));
      li.dataset.person = id;
      return li;
    }));
    if (list && list.length > NAMES_SHOWN) {
      els.rosterNames.appendChild(el("li", "muted", `and ${list.length - NAMES_SHOWN} more`));
    }
    els.rosterEdit.hidden = !ok;
    els.rosterToken.hidden = roster.status !== "refused";
    if (ok) {
      drawRosterPeople();
      renderRosterButtons();
    }
  }

  async function saveRoster(people) {
    if (!room.trim()) {  // the server refuses a blank room name
      setRosterMessage("error", "Not saved: a room whose name is only spaces cannot have a roster.");
      return;
    }
    roster.selectedOrder = people || [];
    els.rosterSave.disabled = true;
    els.rosterRemove.disabled = true;
    setRosterMessage("", "Saving…");
    try {
      const [reply] = await apiCall([{ type: "set_room", room, people }]);
      if (reply && reply.type === "room") {
        roster.people = reply.people === null || reply.people === undefined ? null : reply.people.map(String);
        roster.selected = new Set(roster.people || []);
        roster.dirty = false;
        roster.confirmRemove = false;
        setRosterMessage("ok", roster.people === null
          ? "Roster removed: everyone enrolled is matched here again."
          : `Saved: ${roster.people.length} ${roster.people.length === 1 ? "person" : "people"} expected here.`);
        renderRoster();
        render();
      } else {
        const text = reply ? apiErrorText(reply) : "no answer";
        if (reply && reply.code === "unknown_person") {  // who is gone shows in the list
          await lookUp(people || [], true).catch(() => {});
          await loadRoster();
        }
        setRosterMessage("error", `Not saved: ${text}`);
      }
    } catch (err) {
      if (err.kind === "auth") {
        roster.status = "refused";
        roster.reason = err.message;
        renderRoster();
        setRosterMessage("error", "Not saved: the API refused the token.");
      } else {
        setRosterMessage("error", `Not saved: ${err.message}`);
      }
    } finally {
      els.rosterSave.disabled = false;
      els.rosterRemove.disabled = false;
    }
  }

  let searchTimer = null;
  els.rosterFilter.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      if (els.rosterFilter.value.trim() !== roster.matchQuery) searchPeople();
    }, SEARCH_DELAY_MS);
  });
  els.rosterEdit.addEventListener("submit", (ev) => {
    ev.preventDefault();
    // by name (as far as the names are known), then the rest
    const people = [...roster.selected].sort((a, b) => {
      const x = state.names.get(a);
      const y = state.names.get(b);
      if (x !== undefined && y !== undefined) return x.localeCompare(y);
      return (x === undefined) - (y === undefined);
    });
    saveRoster(people);
  });
  els.rosterRemove.addEventListener("click", () => {
    if (!roster.confirmRemove) {
      roster.confirmRemove = true;
      renderRosterButtons();
      return;
    }
    saveRoster(null);
  });
  els.rosterToken.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const typed = els.rosterTokenInput.value.trim();
    if (!typed) { els.rosterTokenInput.focus(); return; }
    roster.adminToken = typed;
    els.rosterTokenInput.value = "";
    setRosterMessage("", "");
    loadRoster();
  });
  els.roster.addEventListener("toggle", () => {
    if (els.roster.open) {
      setRosterMessage("", "");
      if (roster.status !== "refused" || roster.adminToken) loadRoster();
    }
  });

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
  loadRoster();
  setInterval(() => {
    if (roster.status === "ok" && !els.roster.open && Date.now() - roster.loadedAt >= ROSTER_REFRESH_MS) loadRoster();
  }, 30000);
})();
