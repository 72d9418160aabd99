// /people: enrol (upload or record with live feedback), identify (1:N), verify (1:1),
// list, rename and delete people, and room rosters (who is expected in a room:
// "rooms" / "set_room"). Talks to /v1/api with JSON text frames; audio goes
// as base64 ("audio": file bytes, or "pcm" s16le at the AudioContext's rate).
// Untrusted strings (names, ids, messages) only ever go into textContent.
// Large galleries (a million people): "people" is only ever asked for one page
// (offset/limit) or a search ("query": part of a name, or an id); never for everyone.
"use strict";

(() => {
  const { RATES, bytesToBase64, toS16le, levelOf, drawLevel } = window.AudioUtils;
  const ANALYZE_EVERY_S = 1.0;   // send each new second of a recording as "analyze"
  const MAX_RECORD_S = 90;       // a recording stops by itself (s16le at 48 kHz: 8.6 MB)
  const MAX_FILE_BYTES = 12 * 1024 * 1024;  // base64 must fit server.max_message_bytes (16 MiB)
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  // Large galleries: the list shows PAGE_SIZE people a page (?page_size=N changes it),
  // the roster checklist at most MATCHES_SHOWN people its filter finds.
  const PAGE_SIZE = pageSize(params.get("page_size"), 100);
  const MATCHES_SHOWN = pageSize(params.get("page_size"), 50);
  const SEARCH_DELAY_MS = 300;   // typing pauses this long before a search goes out
  const NAMES_SHOWN = 30;        // names of one roster in the Rooms table (then "and N more")
  const MAX_LOOKUPS = 100;       // names looked up by id at once (roster members)
  const $ = (id) => document.getElementById(id);

  // Display defaults until the server tells (analyze / enrolled replies carry both).
  const limits = { min: 2, recommended: 7 };  // replaced by the server's enroll config

  function pageSize(text, fallback) {
    const n = Number(text);
    return Number.isInteger(n) && n >= 1 && n <= 10000 ? n : fallback;
  }

  // -- small DOM helpers (text only, never innerHTML) ----------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-") || key === "title" || key.startsWith("aria-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function show(target, ...children) {
    target.replaceChildren(...children.filter((c) => c !== null && c !== undefined && c !== false));
  }

  function errorBox(message) {
    return el("p", { class: "pp-error", role: "alert" }, message);
  }

  function busy(message) {
    return el("p", { class: "pp-busy" }, message);
  }

  const withToken = (url) => (token ? `${url}?token=${encodeURIComponent(token)}` : url);
  $("home-link").href = withToken("/");
  if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
    $("secure-warning").hidden = false;
  }

  // -- audio helpers ---------------------------------------------------------------------

  function concat(blocks) {
    let total = 0;
    for (const b of blocks) total += b.length;
    const out = new Float32Array(total);
    let offset = 0;
    for (const b of blocks) { out.set(b, offset); offset += b.length; }
    return out;
  }

  // Linear interpolation; only used when the AudioContext runs at a rate the protocol
  // does not accept (the server resamples every accepted rate itself).
  function resample(x, from, to) {
    if (from === to) return x;
    const n = Math.floor((x.length * to) / from);
    const out = new Float32Array(n);
    const step = from / to;
    for (let i = 0; i < n; i++) {
      const pos = i * step;
      const j = Math.floor(pos);
      const frac = pos - j;
      const a = x[j];
      const b = j + 1 < x.length ? x[j + 1] : a;
      out[i] = a + (b - a) * frac;
    }
    return out;
  }

  // Request fields for float32 samples at the context's rate: s16le pcm at that rate,
  // or at 16 kHz after resampling when the rate is not one the protocol accepts.
  function pcmFields(samples, rate) {
    const sendRate = RATES.includes(rate) ? rate : 16000;
    const x = resample(samples, rate, sendRate);
    return { pcm: bytesToBase64(toS16le(x)), sample_rate: sendRate, format: "s16le", channels: 1 };
  }

  // -- /v1/api ---------------------------------------------------------------------------

  function closeText(event) {
    if (event.code === 1008 && event.reason === "unauthorized") return "the server wants a valid token (add ?token=… to the page address)";
    if (event.code === 1008 && event.reason === "forbidden") return "this token may not use the people API (admin role needed)";
    if (event.code === 1009) return "the audio is too large for one message";
    return `the connection closed (${event.code}${event.reason ? " " + event.reason : ""})`;
  }

  function setStatus(state, text) {
    const node = $("api-status");
    node.dataset.state = state;
    node.textContent = text;
  }

  class ApiClient {
    constructor() {
      this.ws = null;
      this.opening = null;
      this.pending = new Map();
      this.nextId = 1;
    }

    url() {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      return withToken(`${proto}//${location.host}/v1/api`);
    }

    open() {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) return Promise.resolve(this.ws);
      if (this.opening) return this.opening;
      this.opening = new Promise((resolve, reject) => {
        const ws = new WebSocket(this.url());
        let opened = false;
        ws.onopen = () => {
          opened = true;
          this.ws = ws;
          setStatus("connected", "connected");
          resolve(ws);
        };
        ws.onmessage = (event) => {
          let msg;
          try { msg = JSON.parse(event.data); } catch { return; }
          const waiter = this.pending.get(msg.id);
          if (waiter) {
            this.pending.delete(msg.id);
            waiter.resolve(msg);
          }
        };
        ws.onclose = (event) => {
          const text = closeText(event);
          this.ws = null;
          this.opening = null;
          for (const waiter of this.pending.values()) waiter.reject(new Error(text));
          this.pending.clear();
          setStatus("disconnected", opened ? `disconnected: ${text}` : `cannot connect: ${text}`);
          if (!opened) reject(new Error(text));
        };
      });
      return this.opening;
    }

    // Send one request; resolves with its reply (an "error" reply resolves too).
    async call(message) {
      const ws = await this.open();
      const id = `w${this.nextId++}`;
      return new Promise((resolve, reject) => {
        this.pending.set(id, { resolve, reject });
        ws.send(JSON.stringify({ ...message, id }));
      });
    }
  }

  const api = new ApiClient();

  // -- recording -------------------------------------------------------------------------

  let activeRecorder = null;

  // One recording: getUserMedia -> AudioWorklet (pcm-worklet.js) -> Float32 blocks.
  class Recorder {
    constructor(onBlock) {
      this.onBlock = onBlock;
      this.blocks = [];
      this.length = 0;
      this.rate = 0;
    }

    async start() {
      if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
        throw new Error("recording needs a secure page (https or localhost) and a recent browser");
      }
      if (activeRecorder) await activeRecorder.owner.stopRecording();
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      this.ctx = new AudioContext();
      this.rate = this.ctx.sampleRate;
      await this.ctx.audioWorklet.addModule("/static/pcm-worklet.js");
      this.source = this.ctx.createMediaStreamSource(this.stream);
      this.node = new AudioWorkletNode(this.ctx, "pcm-capture", {
        numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
        channelCount: 1, channelCountMode: "explicit", channelInterpretation: "speakers",
        processorOptions: { blockSize: Math.round(this.rate / 20) },  // 50 ms
      });
      this.node.port.onmessage = (event) => {
        const block = event.data;
        this.blocks.push(block);
        this.length += block.length;
        this.onBlock(block);
      };
      // Silent path to the destination so the graph is pulled everywhere.
      this.mute = this.ctx.createGain();
      this.mute.gain.value = 0;
      this.source.connect(this.node);
      this.node.connect(this.mute);
      this.mute.connect(this.ctx.destination);
      if (this.ctx.state !== "running") await this.ctx.resume();
    }

    async stop() {
      if (!this.ctx) return;
      this.node.port.postMessage("flush");
      await new Promise((resolve) => setTimeout(resolve, 80));
      this.node.port.onmessage = null;
      for (const track of this.stream.getTracks()) track.stop();
      try { this.source.disconnect(); this.node.disconnect(); } catch { /* already */ }
      await this.ctx.close().catch(() => {});
      this.ctx = null;
    }

    get seconds() { return this.rate ? this.length / this.rate : 0; }
    samples() { return concat(this.blocks); }
  }

  // Record / stop buttons of one section; `onStop(recorder)` gets the finished take.
  class RecordControl {
    constructor(prefix, { onBlock, onStart, onStop }) {
      this.record = $(`${prefix}-record`);
      this.stopButton = $(`${prefix}-stop`);
      this.level = $(`${prefix}-level`);
      this.onBlock = onBlock || (() => {});
      this.onStart = onStart || (() => {});
      this.onStop = onStop;
      this.recorder = null;
      this.record.addEventListener("click", () => this.startRecording());
      this.stopButton.addEventListener("click", () => this.stopRecording());
    }

    async startRecording() {
      if (this.recorder) return;
      const recorder = new Recorder((block) => {
        drawLevel(this.level, levelOf(block));
        this.onBlock(block, recorder);
        if (recorder.seconds >= MAX_RECORD_S) this.stopRecording();
      });
      recorder.owner = this;
      this.record.disabled = true;
      try {
        await recorder.start();
      } catch (err) {
        this.record.disabled = false;
        await recorder.stop().catch(() => {});
        this.onStart(null, err);
        return;
      }
      this.recorder = recorder;
      activeRecorder = recorder;
      this.record.classList.add("pp-recording");
      this.record.textContent = "● Recording…";
      this.stopButton.disabled = false;
      this.onStart(recorder, null);
    }

    async stopRecording() {
      const recorder = this.recorder;
      if (!recorder) return;
      this.recorder = null;
      if (activeRecorder === recorder) activeRecorder = null;
      this.stopButton.disabled = true;
      await recorder.stop();
      this.record.disabled = false;
      this.record.classList.remove("pp-recording");
      this.record.textContent = "● Record";
      this.level.style.width = "0";
      await this.onStop(recorder);
    }
  }

  async function fileFields(input) {
    const file = input.files && input.files[0];
    if (!file) return null;
    if (file.size > MAX_FILE_BYTES) {
      throw new Error(`${file.name} is ${(file.size / 1048576).toFixed(1)} MiB; files up to ${MAX_FILE_BYTES / 1048576} MiB can be sent`);
    }
    const bytes = new Uint8Array(await file.arrayBuffer());
    return { fields: { audio: bytesToBase64(bytes) }, label: `${file.name} (${(file.size / 1024).toFixed(0)} KiB)` };
  }

  // -- enrol -----------------------------------------------------------------------------

  const enroll = {
    audio: null,          // request fields of the chosen speech
    speechS: 0,           // live: speech found by "analyze" in the recording so far
    chunk: [],            // blocks of the recording not yet sent to "analyze"
    chunkLength: 0,
    lastWarnings: [],
    clipped: false,
    generation: 0,        // bumps on every new recording / file (drops stale replies)
    recording: false,
  };

  function applyLimits(reply) {
    if (typeof reply.min_speech_s === "number") limits.min = reply.min_speech_s;
    if (typeof reply.recommended_speech_s === "number") limits.recommended = reply.recommended_speech_s;
    $("speech-needed").textContent = String(limits.min);
    $("speech-recommended").textContent = String(limits.recommended);
  }

  function drawSpeech() {
    const s = enroll.speechS;
    // rounded down, like the server's messages: 3.96 s of 4 s needed reads 3.9, not 4.0
    $("speech-seconds").textContent = (Math.floor(s * 10 + 1e-9) / 10).toFixed(1);
    const bar = $("speech-progress");
    bar.style.width = `${Math.min(100, (100 * s) / limits.recommended).toFixed(1)}%`;
    bar.dataset.state = s >= limits.recommended ? "good" : s >= limits.min ? "enough" : "short";
    $("speech-progress-min").style.left = `${Math.min(100, (100 * limits.min) / limits.recommended)}%`;
  }

  const WARNING_TEXT = {
    "the recording is very quiet": "Too quiet: speak up or move closer to the microphone.",
    "the recording is clipping": "Clipping: the input is too loud; move back or lower the input gain.",
    "no speech detected": "No speech in the last second.",
  };

  function drawWarnings() {
    const items = [];
    const latest = enroll.lastWarnings;
    const silent = latest.includes("no speech detected");
    for (const w of latest) {
      if (w === "no speech detected" && !enroll.recording) continue;  // only live
      if (silent && w === "the recording is very quiet") continue;  // silence is quiet
      if (w === "the recording is clipping") continue;              // shown below once
      items.push(el("li", { class: w === "no speech detected" ? "pp-info" : "pp-warn" }, WARNING_TEXT[w] || w));
    }
    if (enroll.clipped) items.push(el("li", { class: "pp-warn" }, WARNING_TEXT["the recording is clipping"]));
    show($("enroll-warnings"), ...items);
  }

  function resetEnrollFeedback() {
    enroll.generation += 1;
    enroll.speechS = 0;
    enroll.chunk = [];
    enroll.chunkLength = 0;
    enroll.lastWarnings = [];
    enroll.clipped = false;
    enroll.audio = null;
    $("enroll-submit").disabled = true;
    drawSpeech();
    drawWarnings();
  }

  async function analyzeChunk(fields, generation, replace) {
    let reply;
    try {
      reply = await api.call({ type: "analyze", ...fields });
    } catch (err) {
      return;  // the status line shows the connection problem
    }
    if (generation !== enroll.generation) return;
    if (reply.type !== "analyzed") {
      enroll.lastWarnings = [reply.message || "the audio could not be analysed"];
      drawWarnings();
      if (replace && reply.code === "bad_audio") {
        // a whole file that cannot be decoded: nothing to enrol, say so where it said "Press Enrol"
        enroll.audio = null;
        $("enroll-submit").disabled = true;
        enrollSourceText(`That file could not be read as audio: ${reply.message || "bad audio"}. Choose another file or record.`);
      }
      return;
    }
    applyLimits(reply);
    enroll.speechS = replace ? reply.speech_s : enroll.speechS + reply.speech_s;
    enroll.lastWarnings = reply.warnings || [];
    if ((reply.warnings || []).includes("the recording is clipping")) enroll.clipped = true;
    drawSpeech();
    drawWarnings();
  }

  // Send the recording's newest second (or, at the end, its rest) as "analyze".
  function analyzeNew(recorder, block, last) {
    if (block) {
      enroll.chunk.push(block);
      enroll.chunkLength += block.length;
    }
    const rate = recorder.rate;
    const enough = last ? enroll.chunkLength >= 0.25 * rate : enroll.chunkLength >= ANALYZE_EVERY_S * rate;
    if (!enough) return;
    const x = concat(enroll.chunk);
    enroll.chunk = [];
    enroll.chunkLength = 0;
    analyzeChunk(pcmFields(x, rate), enroll.generation, false);
  }

  function enrollSourceText(text) {
    $("enroll-source").textContent = text;
  }

  const enrollRecord = new RecordControl("enroll", {
    onStart(recorder, err) {
      if (err) {
        show($("enroll-result"), errorBox(`Could not record: ${err.message || err}`));
        return;
      }
      resetEnrollFeedback();
      enroll.recording = true;
      $("enroll-file").value = "";
      show($("enroll-result"));
      enrollSourceText(`Recording at ${recorder.rate} Hz… press Stop when the bar is green.`);
    },
    onBlock(block, recorder) {
      analyzeNew(recorder, block, false);
    },
    async onStop(recorder) {
      enroll.recording = false;
      analyzeNew(recorder, null, true);
      drawWarnings();
      if (recorder.length === 0) {
        enrollSourceText("The recording is empty.");
        return;
      }
      enroll.audio = pcmFields(recorder.samples(), recorder.rate);
      enrollSourceText(`Recorded ${recorder.seconds.toFixed(1)} s. Press Enrol to use it.`);
      $("enroll-submit").disabled = false;
    },
  });

  $("enroll-file").addEventListener("change", async () => {
    if (enrollRecord.recorder) await enrollRecord.stopRecording();
    resetEnrollFeedback();
    show($("enroll-result"));
    let chosen;
    try { chosen = await fileFields($("enroll-file")); } catch (err) {
      show($("enroll-result"), errorBox(err.message));
      return;
    }
    if (!chosen) { enrollSourceText("No speech yet: record or choose a file."); return; }
    enroll.audio = chosen.fields;
    enrollSourceText(`File: ${chosen.label}. Press Enrol to use it.`);
    $("enroll-submit").disabled = false;
    analyzeChunk(chosen.fields, enroll.generation, true);
  });

  $("enroll-person").addEventListener("change", () => {
    const adding = $("enroll-person").value !== "";
    $("enroll-name").placeholder = adding ? "(keep the name)" : "Ada Lovelace";
    $("enroll-submit").textContent = adding ? "Add speech" : "Enrol";
  });

  function parseInfo(text) {
    const trimmed = text.trim();
    if (!trimmed) return undefined;
    if (trimmed.startsWith("{")) {
      try {
        const value = JSON.parse(trimmed);
        if (value && typeof value === "object" && !Array.isArray(value)) return value;
      } catch { /* a plain note */ }
    }
    return { note: trimmed };
  }

  function qualityList(quality) {
    const items = (quality.warnings || []).map((w) => el("li", { class: "pp-warn" }, w));
    return items.length ? el("ul", { class: "pp-warnings" }, ...items) : null;
  }

  $("enroll-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = $("enroll-result");
    if (enrollRecord.recorder) await enrollRecord.stopRecording();
    const person = $("enroll-person").value;
    const name = $("enroll-name").value.trim();
    if (!person && !name) {
      show(result, errorBox("Enter the person's name."));
      $("enroll-name").focus();
      return;
    }
    if (!enroll.audio) {
      show(result, errorBox("Record some speech or choose a file first."));
      return;
    }
    const message = { type: "enroll", ...enroll.audio };
    if (name) message.name = name;
    if (person) message.person = person;
    const info = parseInfo($("enroll-info").value);
    if (info) message.info = info;
    $("enroll-submit").disabled = true;
    show(result, busy("Enrolling…"));
    let reply;
    try {
      reply = await api.call(message);
    } catch (err) {
      show(result, errorBox(`Not enrolled: ${err.message}`));
      $("enroll-submit").disabled = false;
      return;
    }
    $("enroll-submit").disabled = false;
    if (reply.type !== "enrolled") {
      show(result, errorBox(`Not enrolled: ${reply.message}`));
      result.dataset.code = reply.code || "";
      return;
    }
    result.dataset.code = "";
    const q = reply.quality || {};
    applyLimits(q);
    show(result,
      el("p", { class: "pp-ok", id: "enroll-ok" }, "Enrolled ",
        el("strong", { id: "enroll-person-name" }, reply.person.name), " ",
        el("code", { id: "enroll-person-id" }, reply.person.id)),
      el("p", {}, `${q.speech_s} s of speech in this audio (${q.audio_s} s long, level ${q.level_dbfs} dBFS); `
        + `${Number(reply.person.speech_s).toFixed(1)} s in total for this person.`),
      qualityList(q));
    await refreshPeople();
  });

  // -- identify --------------------------------------------------------------------------

  // The optional "as heard in room" field: {room} when filled in (that room's profile
  // in the server's rooms config decides), else nothing (the server's own settings).
  function roomField(id) {
    const room = $(id).value.trim();
    return room ? { room } : {};
  }

  let identifyAudio = null;

  function fmt(distance) {
    return typeof distance === "number" ? distance.toFixed(2) : "–";
  }

  // A threshold as configured, with at least two decimals (1 -> "1.00", 0.975 stays).
  function fmtThreshold(t) {
    const decimals = (String(t).split(".")[1] || "").length;
    return Number(t).toFixed(Math.min(6, Math.max(2, decimals)));
  }

  async function runIdentify() {
    const result = $("identify-result");
    if (!identifyAudio) return;
    show(result, busy("Identifying…"));
    let reply;
    try {
      reply = await api.call({ type: "identify", top_k: 5, ...roomField("identify-room"), ...identifyAudio });
    } catch (err) {
      show(result, errorBox(err.message));
      return;
    }
    if (reply.type !== "identified") {
      show(result, errorBox(reply.message));
      return;
    }
    const threshold = reply.threshold;
    let verdict;
    if (reply.match) {
      verdict = el("p", { id: "identify-verdict", class: "pp-verdict pp-yes" },
        `${reply.match.name} (${fmt(reply.match.distance)})`);
    } else if (reply.results.length) {
      verdict = el("p", { id: "identify-verdict", class: "pp-verdict pp-no" }, "nobody enrolled is close enough");
    } else {
      verdict = el("p", { id: "identify-verdict", class: "pp-verdict pp-no" }, "nobody enrolled");
    }
    const rows = reply.results.map((r, i) => {
      const passes = typeof threshold === "number" && r.distance <= threshold;
      const isMatch = reply.match && reply.match.id === r.id;
      return el("tr", { class: isMatch ? "pp-match" : passes ? "pp-pass" : "", "data-person-id": r.id },
        el("td", { class: "pp-num" }, String(i + 1)),
        el("td", {}, el("span", { class: "pp-name" }, r.name), el("br"), el("code", { class: "pp-id" }, r.id)),
        el("td", { class: "pp-num pp-distance" }, r.distance.toFixed(4)));
    });
    const table = reply.results.length
      ? el("table", { id: "identify-table", class: "pp-table" },
        el("thead", {}, el("tr", {}, el("th", { class: "pp-num" }, "Rank"), el("th", {}, "Name"),
          el("th", { class: "pp-num" }, "Distance"))),
        el("tbody", {}, ...rows))
      : null;
    const thresholdLine = typeof threshold === "number"
      ? el("p", { class: "pp-muted", id: "identify-threshold" },
        `A match needs distance ≤ ${fmtThreshold(threshold)} (0 = identical voice, 1.41 = unrelated).`)
      : null;
    show(result, verdict, table, thresholdLine);
  }

  const identifyRecord = new RecordControl("identify", {
    onStart(recorder, err) {
      if (err) show($("identify-result"), errorBox(`Could not record: ${err.message || err}`));
      else { $("identify-file").value = ""; show($("identify-result"), busy("Recording… press Stop to identify.")); }
    },
    async onStop(recorder) {
      if (!recorder.length) return;
      identifyAudio = pcmFields(recorder.samples(), recorder.rate);
      $("identify-submit").disabled = false;
      await runIdentify();
    },
  });

  $("identify-file").addEventListener("change", async () => {
    if (identifyRecord.recorder) await identifyRecord.stopRecording();
    let chosen;
    try { chosen = await fileFields($("identify-file")); } catch (err) {
      show($("identify-result"), errorBox(err.message));
      return;
    }
    if (!chosen) return;
    identifyAudio = chosen.fields;
    $("identify-submit").disabled = false;
    await runIdentify();
  });
  $("identify-submit").addEventListener("click", runIdentify);

  // -- verify ----------------------------------------------------------------------------

  let verifyAudio = null;

  async function runVerify() {
    const result = $("verify-result");
    const person = $("verify-person").value;
    if (!verifyAudio) return;
    if (!person) { show(result, errorBox("Choose a person to verify against.")); return; }
    show(result, busy("Verifying…"));
    let reply;
    try {
      reply = await api.call({ type: "verify", person, ...roomField("verify-room"), ...verifyAudio });
    } catch (err) {
      show(result, errorBox(err.message));
      return;
    }
    if (reply.type !== "verified") {
      show(result, errorBox(reply.message));
      return;
    }
    const option = $("verify-person").selectedOptions[0];
    const who = option ? option.dataset.name || option.textContent : person;
    show(result,
      el("p", { id: "verify-verdict", class: `pp-verdict ${reply.accepted ? "pp-yes" : "pp-no"}` },
        reply.accepted ? `accepted: this is ${who}` : `rejected: this is not ${who}`),
      el("p", { class: "pp-muted" },
        `distance ${reply.distance.toFixed(4)}, threshold ${fmtThreshold(reply.threshold)} (accepted when distance ≤ threshold)`));
  }

  const verifyRecord = new RecordControl("verify", {
    onStart(recorder, err) {
      if (err) show($("verify-result"), errorBox(`Could not record: ${err.message || err}`));
      else { $("verify-file").value = ""; show($("verify-result"), busy("Recording… press Stop to verify.")); }
    },
    async onStop(recorder) {
      if (!recorder.length) return;
      verifyAudio = pcmFields(recorder.samples(), recorder.rate);
      $("verify-submit").disabled = false;
      await runVerify();
    },
  });

  $("verify-file").addEventListener("change", async () => {
    if (verifyRecord.recorder) await verifyRecord.stopRecording();
    let chosen;
    try { chosen = await fileFields($("verify-file")); } catch (err) {
      show($("verify-result"), errorBox(err.message));
      return;
    }
    if (!chosen) return;
    verifyAudio = chosen.fields;
    $("verify-submit").disabled = false;
    await runVerify();
  });
  $("verify-submit").addEventListener("click", runVerify);

  // -- people ----------------------------------------------------------------------------
  //
  // A gallery may hold a million people: the list shows one page at a time (offset /
  // limit), the search box asks the server ("query": a part of the name, or an id), and
  // nothing on this page ever asks for everyone.

  const list = {
    offset: 0,             // of the page shown
    query: "",             // the search the page is of ("" = everyone)
    total: 0,              // people matching it (from the last reply)
    people: [],            // the page shown, oldest enrolment first
    seq: 0,                // bumps on every read (drops stale replies)
  };

  // person id -> name, from every "people" reply seen (the table's pages, the roster
  // checklist's searches, look-ups by id); names for the rosters without a full list.
  const names = new Map();
  const gone = new Set();  // ids a look-up found no longer enrolled

  function remember(people) {
    for (const p of people) {
      names.set(p.id, p.name);
      gone.delete(p.id);
    }
  }

  function personName(id) {
    return names.has(id) ? names.get(id) : null;
  }

  const fmtCount = (n) => Number(n).toLocaleString("en-US");

  // Fill a <select> with `people`; someone chosen in it stays chosen (and listed) when
  // they are not among them, unless they were deleted.
  function fillSelect(select, people, firstLabel) {
    const current = select.value;
    const kept = select.selectedOptions[0];
    const options = [];
    if (firstLabel !== null) options.push(el("option", { value: "" }, firstLabel));
    for (const p of people) {
      options.push(el("option", { value: p.id, "data-name": p.name }, `${p.name} (${p.id})`));
    }
    const chosen = current && current === select.dataset.chosen;
    if (chosen && kept && !gone.has(current) && !people.some((p) => p.id === current)) {
      options.splice(firstLabel !== null ? 1 : 0, 0, kept);
    }
    show(select, ...options);
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  }

  for (const select of [$("enroll-person"), $("verify-person")]) {
    select.addEventListener("change", () => { select.dataset.chosen = select.value; });
  }

  function personRow(p) {
    const nameCell = el("td", { class: "pp-name" }, p.name);
    const actions = el("td", { class: "pp-actions" });
    const row = el("tr", { "data-person-id": p.id }, nameCell, el("td", {}, el("code", {}, p.id)),
      el("td", { class: "pp-num" }, `${Number(p.speech_s).toFixed(1)} s`),
      el("td", {}, new Date(p.created * 1000).toLocaleString()), actions);

    function normal() {
      show(nameCell, p.name);
      show(actions,
        el("button", { type: "button", class: "pp-small rename", onclick: editing }, "Rename"),
        el("button", { type: "button", class: "pp-small pp-danger delete", onclick: confirming }, "Delete"));
    }

    function editing() {
      const input = el("input", { class: "rename-input", value: p.name, maxLength: 200 });
      const save = async () => {
        const name = input.value.trim();
        if (!name) { input.focus(); return; }
        const reply = await api.call({ type: "update_person", person: p.id, name }).catch((e) => ({ message: e.message }));
        if (reply.type !== "person") { show($("people-result"), errorBox(`Not renamed: ${reply.message}`)); return; }
        names.set(p.id, reply.person.name);
        show($("people-result"), el("p", { class: "pp-ok" }, `Renamed to ${reply.person.name}.`));
        await refreshPeople();
      };
      input.addEventListener("keydown", (e) => {
        if (e.key === "Enter") { e.preventDefault(); save(); }
        if (e.key === "Escape") normal();
      });
      show(nameCell, input);
      show(actions,
        el("button", { type: "button", class: "pp-small rename-save", onclick: save }, "Save"),
        el("button", { type: "button", class: "pp-small rename-cancel", onclick: normal }, "Cancel"));
      input.focus();
      input.select();
    }

    function confirming() {
      show(actions,
        el("span", { class: "pp-confirm-text" }, "Delete for good? "),
        el("button", {
          type: "button", class: "pp-small pp-danger delete-confirm",
          onclick: async () => {
            const reply = await api.call({ type: "delete_person", person: p.id }).catch((e) => ({ message: e.message }));
            if (reply.type !== "deleted") { show($("people-result"), errorBox(`Not deleted: ${reply.message}`)); return; }
            gone.add(p.id);
            show($("people-result"), el("p", { class: "pp-ok" }, `Deleted ${p.name} and their voice data.`));
            await refreshPeople();
          },
        }, "Yes, delete"),
        el("button", { type: "button", class: "pp-small delete-cancel", onclick: normal }, "Cancel"));
    }

    normal();
    return row;
  }

  function drawPeople() {
    const { people, total, offset, query } = list;
    show($("people-table").tBodies[0], ...people.map(personRow));
    $("people-table").hidden = people.length === 0;
    $("people-empty").textContent = query ? `Nobody matches “${query}”.` : "Nobody is enrolled yet.";
    $("people-empty").hidden = people.length !== 0;
    $("people-count").textContent = query ? `(${fmtCount(total)} matching)` : `(${fmtCount(total)})`;
    $("people-range").textContent = people.length
      ? `${fmtCount(offset + 1)}–${fmtCount(offset + people.length)} of ${fmtCount(total)}` : "";
    $("people-prev").disabled = offset === 0;
    $("people-next").disabled = offset + people.length >= total;
    $("people-pager").hidden = total <= PAGE_SIZE && offset === 0 && !query;
    // the selects offer the people of this page (search the list to find someone else)
    const byName = people.slice().sort((a, b) => a.name.localeCompare(b.name));
    fillSelect($("enroll-person"), byName, "a new person");
    fillSelect($("verify-person"), byName, null);
  }

  // Read the page at list.offset of list.query. A page past the end (its people deleted
  // meanwhile) moves to the last page there is. Throws when the connection fails.
  async function loadPage() {
    const seq = ++list.seq;
    let reply;
    for (let attempt = 0; attempt < 2; attempt++) {
      reply = await api.call({ type: "people", offset: list.offset, limit: PAGE_SIZE, query: list.query || null });
      if (seq !== list.seq) return;
      if (reply.type !== "people" || reply.people.length || list.offset === 0 || !reply.total) break;
      list.offset = Math.floor((reply.total - 1) / PAGE_SIZE) * PAGE_SIZE;
    }
    if (reply.type !== "people") { show($("people-result"), errorBox(reply.message)); return; }
    list.people = reply.people;
    list.total = Number(reply.total ?? reply.people.length);
    list.offset = Number(reply.offset ?? list.offset);
    remember(list.people);
    drawPeople();
    $("people-table").dataset.loaded = String(Date.now());
  }

  // The page shown (same offset and search), the rosters and the roster checklist.
  async function refreshPeople() {
    try {
      await loadPage();
    } catch (err) {
      show($("people-result"), errorBox(err.message));
      show($("rooms-result"), errorBox(`Rooms not loaded: ${err.message}`));
      return;
    }
    await loadMatches();
    await refreshRooms();  // names in the rosters; a deleted person left every roster
  }

  async function showPage(offset) {
    list.offset = Math.max(0, offset);
    try { await loadPage(); } catch (err) { show($("people-result"), errorBox(err.message)); }
  }

  $("people-refresh").addEventListener("click", refreshPeople);
  $("people-prev").addEventListener("click", () => showPage(list.offset - PAGE_SIZE));
  $("people-next").addEventListener("click", () => showPage(list.offset + PAGE_SIZE));

  let searchTimer = null;
  $("people-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      const query = $("people-search").value.trim();
      if (query === list.query) return;
      list.query = query;
      showPage(0);
    }, SEARCH_DELAY_MS);
  });

  // Names of `ids` not known yet (or all of them, `recheck`), one "people" request by id
  // each (at most MAX_LOOKUPS): who is found gets a name, who is not is marked gone.
  async function lookUp(ids, recheck) {
    const todo = [...new Set(ids)].filter((id) => recheck || (!names.has(id) && !gone.has(id))).slice(0, MAX_LOOKUPS);
    if (!todo.length) return;
    const replies = await Promise.all(todo.map((id) =>
      api.call({ type: "people", query: id, limit: 10 }).catch(() => null)));
    todo.forEach((id, i) => {
      const reply = replies[i];
      if (!reply || reply.type !== "people") return;
      const p = reply.people.find((x) => x.id === id);
      if (p) remember([p]); else gone.add(id);
    });
  }

  // -- rooms (rosters: who is expected in a room) ------------------------------------------

  const rooms = {
    rosters: [],           // [{room, people: [ids]}] from the last "rooms" reply
    selected: new Set(),   // person ids checked in the form
    editing: null,         // room name whose roster the form holds (null: a new roster)
    matches: [],           // one page of the people the filter finds, by name
    matchTotal: 0,         // how many it finds
    matchQuery: null,      // the filter those are for (null: not read yet)
    seq: 0,                // bumps on every search (drops stale replies)
  };

  // A set_room / rooms error reply in plain words.
  function roomErrorText(reply, people) {
    if (reply.code === "unknown_person") {
      const id = (people || []).find((pid) => String(reply.message || "").includes(pid));
      const who = id ? (personName(id) || id) : "someone on the list";
      return `${who} is no longer enrolled (deleted meanwhile?). The list was reloaded: check it and save again.`;
    }
    if (reply.code === "unknown_type") return "this server does not know room rosters (it needs an update)";
    return reply.message || reply.code || "unknown error";
  }

  function drawSelectedCount() {
    const n = rooms.selected.size;
    $("roster-selected-count").textContent = n === 0 ? "(nobody checked)" : `(${fmtCount(n)} checked)`;
  }

  function checkItem(id, label, className) {
    const box = el("input", { type: "checkbox", value: id, checked: rooms.selected.has(id) });
    box.addEventListener("change", () => {
      if (box.checked) rooms.selected.add(id); else rooms.selected.delete(id);
      drawSelectedCount();
    });
    return el("li", { "data-person-id": id, class: className }, el("label", {}, box, " ", ...label));
  }

  // The checkboxes of the form: the people the filter finds (one page), then everyone
  // checked who is not among them (the roster being edited stays in sight).
  function drawChecklist() {
    const items = [];
    const listed = new Set();
    for (const p of rooms.matches) {
      listed.add(p.id);
      items.push(checkItem(p.id, [el("span", { class: "pp-name" }, p.name), " ", el("code", { class: "pp-id" }, p.id)]));
    }
    const others = [...rooms.selected].filter((id) => !listed.has(id))
      .sort((a, b) => (personName(a) || "\uffff").localeCompare(personName(b) || "\uffff"));
    for (const id of others) {
      const name = personName(id);
      if (gone.has(id)) {
        items.push(checkItem(id, [name ? el("span", { class: "pp-name" }, name) : null, " ",
          el("code", { class: "pp-id" }, id), " (not enrolled)"], "pp-gone"));
      } else {
        items.push(checkItem(id, [name ? el("span", { class: "pp-name" }, name) : null, " ",
          el("code", { class: "pp-id" }, id)], "pp-member"));
      }
    }
    show($("roster-people"), ...items);
    const query = rooms.matchQuery || "";
    const empty = $("roster-people-empty");
    empty.textContent = query ? `Nobody matches “${query}”.` : "Nobody is enrolled yet: enrol people first.";
    empty.hidden = rooms.matchQuery === null || rooms.matches.length !== 0;
    const more = $("roster-more");
    more.hidden = rooms.matchTotal <= rooms.matches.length;
    more.textContent = query
      ? `Showing ${fmtCount(rooms.matches.length)} of ${fmtCount(rooms.matchTotal)} people matching “${query}”: type more of the name to narrow it.`
      : `Showing ${fmtCount(rooms.matches.length)} of ${fmtCount(rooms.matchTotal)} people: type a name (or an id) to find someone else.`;
    drawSelectedCount();
  }

  // Ask the server for the people the filter finds (one page) and redraw the checklist.
  async function loadMatches() {
    const query = $("roster-filter").value.trim();
    const seq = ++rooms.seq;
    let reply;
    try {
      reply = await api.call({ type: "people", limit: MATCHES_SHOWN, query: query || null });
    } catch (err) {
      return;  // the status line and the people list say why
    }
    if (seq !== rooms.seq) return;
    if (reply.type !== "people") {
      show($("rooms-result"), errorBox(`People not found: ${reply.message || reply.code}`));
      return;
    }
    remember(reply.people);
    rooms.matches = reply.people.slice().sort((a, b) => a.name.localeCompare(b.name));
    rooms.matchTotal = Number(reply.total ?? reply.people.length);
    rooms.matchQuery = query;
    drawChecklist();
    $("roster-people").dataset.loaded = String(Date.now());
  }

  let filterTimer = null;
  $("roster-filter").addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      if ($("roster-filter").value.trim() !== rooms.matchQuery) loadMatches();
    }, SEARCH_DELAY_MS);
  });

  function editRoster(roster) {
    rooms.editing = roster ? roster.room : null;
    rooms.selected = new Set(roster ? roster.people : []);
    $("roster-room").value = roster ? roster.room : "";
    drawRosterTitle();
    $("roster-filter").value = "";
    clearTimeout(filterTimer);
    drawChecklist();
    if (rooms.matchQuery) loadMatches();  // the filter was cleared: everyone again
    const unnamed = [...rooms.selected].filter((id) => !names.has(id) && !gone.has(id));
    if (unnamed.length) lookUp(unnamed, false).then(drawChecklist);
    if (roster) $("roster-form").scrollIntoView({ block: "nearest" });
    $("roster-room").focus();
  }

  function drawRosterTitle() {
    const room = $("roster-room").value.trim();
    const exists = room && rooms.rosters.some((r) => r.room === room);
    $("roster-title").textContent = exists ? `Roster of ${room}` : "New roster";
  }

  $("roster-room").addEventListener("input", drawRosterTitle);

  $("roster-clear").addEventListener("click", () => { editRoster(null); show($("rooms-result")); });

  function roomLink(room) {
    return withToken(`/room/${encodeURIComponent(room)}`);
  }

  function rosterRow(roster) {
    const shown = roster.people.slice(0, NAMES_SHOWN);
    const who = shown.map((id) => personName(id) || id).sort((a, b) => a.localeCompare(b));
    const more = roster.people.length - shown.length;
    const expected = who.length
      ? el("td", { class: "pp-expected" }, who.join(", ") + (more > 0 ? ` and ${fmtCount(more)} more` : ""))
      : el("td", { class: "pp-expected pp-muted" }, "nobody (everyone who speaks is a visitor)");
    const actions = el("td", { class: "pp-actions" });
    const row = el("tr", { "data-room": roster.room },
      el("td", {}, el("a", { href: roomLink(roster.room), class: "pp-room-link" }, roster.room),
        el("br"), el("span", { class: "pp-muted" }, `${fmtCount(roster.people.length)} ${roster.people.length === 1 ? "person" : "people"}`)),
      expected, actions);

    function normal() {
      show(actions,
        el("button", { type: "button", class: "pp-small roster-edit", onclick: () => editRoster(roster) }, "Edit"),
        el("button", { type: "button", class: "pp-small pp-danger roster-remove", onclick: confirming }, "Remove roster"));
    }

    function confirming() {
      show(actions,
        el("span", { class: "pp-confirm-text" }, "Match everyone in this room again? "),
        el("button", {
          type: "button", class: "pp-small pp-danger roster-remove-confirm",
          onclick: async () => {
            let reply;
            try {
              reply = await api.call({ type: "set_room", room: roster.room, people: null });
            } catch (err) {
              show($("rooms-result"), errorBox(`Not removed: ${err.message}`));
              normal();
              return;
            }
            if (reply.type !== "room") {
              show($("rooms-result"), errorBox(`Not removed: ${roomErrorText(reply)}`));
              normal();
              return;
            }
            show($("rooms-result"), el("p", { class: "pp-ok" },
              `Removed the roster of ${roster.room}: everyone enrolled is matched there again.`));
            if (rooms.editing === roster.room) editRoster(null);
            await refreshRooms();
          },
        }, "Yes, remove"),
        el("button", { type: "button", class: "pp-small roster-remove-cancel", onclick: normal }, "Cancel"));
    }

    normal();
    return row;
  }

  function drawRooms() {
    const sorted = rooms.rosters.slice().sort((a, b) => a.room.localeCompare(b.room));
    show($("rooms-table").tBodies[0], ...sorted.map(rosterRow));
    $("rooms-table").hidden = sorted.length === 0;
    $("rooms-empty").hidden = sorted.length !== 0;
    $("rooms-count").textContent = `(${sorted.length})`;
  }

  async function refreshRooms() {
    let reply;
    try {
      reply = await api.call({ type: "rooms" });
    } catch (err) {
      show($("rooms-result"), errorBox(`Rooms not loaded: ${err.message}`));
      return;
    }
    if (reply.type !== "rooms") {
      show($("rooms-result"), errorBox(`Rooms not loaded: ${roomErrorText(reply)}`));
      return;
    }
    rooms.rosters = (reply.rooms || []).map((r) => ({ room: String(r.room), people: (r.people || []).map(String) }));
    // the names the table shows: looked up by id when no page or search brought them
    await lookUp(rooms.rosters.flatMap((r) => r.people.slice(0, NAMES_SHOWN)), false);
    drawRooms();
    drawRosterTitle();
    $("rooms-table").dataset.loaded = String(Date.now());
  }

  $("rooms-refresh").addEventListener("click", refreshPeople);

  // checked people by name (as far as their names are known), the rest after them
  function byName(ids) {
    return ids.slice().sort((a, b) => {
      const x = personName(a);
      const y = personName(b);
      if (x !== null && y !== null) return x.localeCompare(y);
      return (x === null) - (y === null);
    });
  }

  $("roster-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = $("rooms-result");
    const room = $("roster-room").value.trim();
    drawRosterTitle();
    if (!room) {
      show(result, errorBox("Enter the room's name (as in its address /room/NAME)."));
      $("roster-room").focus();
      return;
    }
    const people = byName([...rooms.selected]);
    $("roster-save").disabled = true;
    show(result, busy("Saving…"));
    let reply;
    try {
      reply = await api.call({ type: "set_room", room, people });
    } catch (err) {
      show(result, errorBox(`Not saved: ${err.message}`));
      $("roster-save").disabled = false;
      return;
    }
    $("roster-save").disabled = false;
    if (reply.type !== "room") {
      result.dataset.code = reply.code || "";
      const text = `Not saved: ${roomErrorText(reply, people)}`;
      if (reply.code === "unknown_person") {  // the checklist shows who is gone
        await lookUp(people, true).catch(() => {});
        await refreshPeople();
      }
      show(result, errorBox(text));
      return;
    }
    result.dataset.code = "";
    const saved = reply.people || [];
    await refreshRooms();
    const stored = rooms.rosters.find((r) => r.room === reply.room);
    editRoster(stored || null);  // the form holds the roster as stored
    show(result, el("p", { class: "pp-ok", id: "roster-saved" },
      saved.length
        ? `Saved: ${saved.length} ${saved.length === 1 ? "person is" : "people are"} expected in ${reply.room}.`
        : `Saved: nobody is expected in ${reply.room}; everyone who speaks there is matched as a visitor.`),
      el("p", {}, el("a", { href: roomLink(reply.room) }, `Open the display of ${reply.room}`)));
  });

  // The server's enroll.min_speech_s / recommended_speech_s, before anything is recorded:
  // "analyze" of a tenth of a second of silence reports them.
  async function learnLimits() {
    try {
      const reply = await api.call({ type: "analyze", ...pcmFields(new Float32Array(1600), 16000) });
      if (reply.type === "analyzed") { applyLimits(reply); drawSpeech(); }
    } catch (err) {
      // the status line shows the connection problem; the defaults stay
    }
  }

  drawSpeech();
  refreshPeople();
  learnLimits();
})();
