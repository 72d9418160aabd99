// /mic/NAME: this browser's microphone as a microphone of room NAME.
// getUserMedia -> AudioWorklet (pcm-worklet.js) -> /v1/ingest: hello (the context's rate,
// s16le, mono), audio messages with seq (JSON, base64 pcm), end on stop. Shows the
// stream's own events (who is speaking, provisional or final) and a level meter.
// ?servers=HOST:PORT,wss://HOST2,... lists the servers of a cluster (default: this page's
// own host). With several, a lost or refused connection moves to the next one at once: a
// new hello (a new stream), then the audio captured meanwhile (the newest 5 s); the
// back-off (0.5 s .. 5 s) starts after a whole round has failed. With one, a lost
// connection stops the microphone, as it always did. A refused token or hello stops it.
"use strict";

(() => {
  const { RATES, bytesToBase64, toS16le, levelOf } = window.AudioUtils;
  const drawLevel = (level) => window.AudioUtils.drawLevel($("mic-level"), level);
  const CHUNK_S = 0.1;  // one audio message per 100 ms
  const MAX_QUEUED = 50;  // chunks kept while not connected (5 s); the oldest go first
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 5000;
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const $ = (id) => document.getElementById(id);
  const withToken = (url) => (token ? `${url}?token=${encodeURIComponent(token)}` : url);
  const servers = serverList(params.get("servers"));

  const room = decodeURIComponent(location.pathname.replace(/^\/mic\/?/, "")) || "main";
  const micId = "browser-" + Array.from(crypto.getRandomValues(new Uint8Array(4)),
    (b) => b.toString(16).padStart(2, "0")).join("");

  $("mic-room").textContent = room;
  $("mic-id").textContent = micId;
  document.title = `Microphone ${room} - voiceprint streamer`;
  $("home-link").href = withToken("/");
  $("room-link").href = withToken(`/room/${encodeURIComponent(room)}`)
    + (params.get("servers") ? `${token ? "&" : "?"}servers=${encodeURIComponent(params.get("servers"))}` : "");
  if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
    $("secure-warning").hidden = false;
  }

  // Streaming linear resampler, only for context rates the protocol does not accept.
  class Resampler {
    constructor(from, to) { this.step = from / to; this.pos = 0; this.last = 0; }
    // `pos` is the next output's position in the current block (-1 = the previous
    // block's last sample).
    process(x) {
      const out = [];
      while (this.pos <= x.length - 1) {
        const j = Math.floor(this.pos);
        const frac = this.pos - j;
        const a = j < 0 ? this.last : x[j];
        const b = j + 1 < x.length ? x[j + 1] : a;
        out.push(a + (b - a) * frac);
        this.pos += this.step;
      }
      this.pos -= x.length;
      if (x.length) this.last = x[x.length - 1];
      return Float32Array.from(out);
    }
  }

  function setStatus(state, text) {
    $("mic-status").dataset.state = state;
    $("mic-status").textContent = text;
  }

  function showError(text) {
    $("mic-error").textContent = text;
    $("mic-error").hidden = !text;
  }

  // A close after which another server (or a retry) would refuse the stream too.
  function refused(event) {
    return event.code === 1008 || event.code === 1003;
  }

  function closeText(event) {
    if (event.code === 1008 && event.reason === "unauthorized") return "the server wants a valid token (add ?token=… to the page address)";
    if (event.code === 1008 && event.reason === "forbidden") return "this token may not stream audio (ingest role needed)";
    return `connection closed (${event.code}${event.reason ? " " + event.reason : ""})`;
  }

  // -- events ----------------------------------------------------------------------------

  function fmtTime(t) { return `${Number(t).toFixed(1)} s`; }

  function showSpeaker(event) {
    const box = $("mic-speaker");
    const name = event.person ? event.person.name : "unknown speaker";
    box.dataset.state = event.final ? "final" : "provisional";
    box.dataset.personId = event.person ? event.person.id : "";
    $("mic-speaker-name").textContent = event.final ? name : `${name}?`;
    $("mic-speaker-distance").textContent = typeof event.distance === "number" ? `(${event.distance.toFixed(2)})` : "";
    const tag = $("mic-speaker-tag");
    tag.hidden = false;
    tag.textContent = event.final ? "final" : "provisional";
    if (event.final) {
      const item = document.createElement("li");
      item.dataset.personId = event.person ? event.person.id : "";
      const time = document.createElement("span");
      time.className = "mic-time";
      time.textContent = `${fmtTime(event.start)} – ${fmtTime(event.end)}`;
      item.append(time, document.createTextNode(
        `${name}${typeof event.distance === "number" ? ` (${event.distance.toFixed(2)})` : ""}`));
      $("mic-log").prepend(item);
      while ($("mic-log").children.length > 30) $("mic-log").lastChild.remove();
    }
  }

  function onEvent(msg) {
    if (msg.type === "speaker") showSpeaker(msg);
    else if (msg.type === "speech_start") {
      const box = $("mic-speaker");
      if (box.dataset.state !== "provisional") {
        box.dataset.state = "provisional";
        $("mic-speaker-name").textContent = "listening…";
        $("mic-speaker-distance").textContent = "";
        $("mic-speaker-tag").hidden = true;
      }
    } else if (msg.type === "error") showError(msg.message);
  }

  // -- streaming -------------------------------------------------------------------------

  let current = null;

  async function start() {
    if (current) return;
    showError("");
    $("mic-start").disabled = true;
    const s = { queue: [], pending: [], pendingLength: 0, seq: 0, sentSamples: 0, ready: false,
                stopping: false, bye: null, server: 0, failures: 0, backoff: BACKOFF_MIN_MS,
                retryTimer: null };
    current = s;
    try {
      if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
        throw new Error("the microphone needs a secure page (https or localhost)");
      }
      setStatus("connecting", "starting the microphone…");
      s.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      s.ctx = new AudioContext();
      const rate = s.ctx.sampleRate;
      s.rate = RATES.includes(rate) ? rate : 16000;
      s.resampler = s.rate === rate ? null : new Resampler(rate, s.rate);
      $("mic-format").textContent = `${s.rate} Hz, s16le, mono${s.resampler ? ` (resampled from ${rate} Hz)` : ""}`;
      await s.ctx.audioWorklet.addModule("/static/pcm-worklet.js");
      s.source = s.ctx.createMediaStreamSource(s.stream);
      s.node = new AudioWorkletNode(s.ctx, "pcm-capture", {
        numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
        channelCount: 1, channelCountMode: "explicit", channelInterpretation: "speakers",
        processorOptions: { blockSize: Math.round(rate * CHUNK_S) },
      });
      s.node.port.onmessage = (event) => onBlock(s, event.data);
      s.mute = s.ctx.createGain();
      s.mute.gain.value = 0;
      s.source.connect(s.node);
      s.node.connect(s.mute);
      s.mute.connect(s.ctx.destination);
      if (s.ctx.state !== "running") await s.ctx.resume();

      openSocket(s);
      $("mic-stop").disabled = false;
      $("mic-start").textContent = "● Streaming…";
      $("mic-start").classList.add("pp-recording");
    } catch (err) {
      showError(`Could not start: ${err.message || err}`);
      await teardown(s, "error", "not streaming");
    }
  }

  // Connect to servers[s.server] and stream: hello, then the queued audio once ready.
  function openSocket(s) {
    s.retryTimer = null;
    const server = servers[s.server];
    const where = servers.length > 1 ? ` to ${new URL(server).host}` : "";
    setStatus("connecting", `connecting${where}…`);
    $("mic-status").dataset.server = server;
    const ws = new WebSocket(withToken(`${server}/v1/ingest`));
    s.ws = ws;
    s.closed = false;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "hello", room, mic: micId, sample_rate: s.rate,
                               format: "s16le", channels: 1 }));
    };
    ws.onmessage = (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch { return; }
      if (msg.type === "ready") {
        s.ready = true;
        s.streamId = msg.stream;
        s.failures = 0;
        s.backoff = BACKOFF_MIN_MS;
        setStatus("streaming", `streaming (${msg.stream}${servers.length > 1 ? ` on ${new URL(server).host}` : ""})`);
        for (const pcm of s.queue) sendAudio(s, pcm);
        s.queue = [];
      } else if (msg.type === "bye") {
        s.bye = msg;
      } else {
        onEvent(msg);
      }
    };
    ws.onclose = (event) => {
      if (s.ws !== ws) return;
      s.closed = true;
      if (s.closedWaiter) s.closedWaiter();
      if (s.stopping) return;
      if (servers.length > 1 && !refused(event) && current === s) {
        moveOn(s, closeText(event));
        return;
      }
      showError(`The stream stopped: ${closeText(event)}.`);
      teardown(s, "error", "disconnected");
    };
  }

  // The connection to servers[s.server] failed or was lost: a new stream on the next
  // server, at once, or after the back-off when every server failed since the last ready.
  function moveOn(s, why) {
    s.ready = false;
    s.seq = 0;
    s.failures += 1;
    const lost = servers[s.server];
    s.server = (s.server + 1) % servers.length;
    let wait = 0;
    if (s.failures % servers.length === 0) {
      wait = s.backoff;
      s.backoff = Math.min(s.backoff * 2, BACKOFF_MAX_MS);
    }
    console.info(`mic: ${lost}: ${why}; moving to ${servers[s.server]} in ${wait} ms`);
    setStatus("connecting", `${new URL(lost).host} lost; moving to ${new URL(servers[s.server]).host}…`);
    s.retryTimer = setTimeout(() => { if (current === s && !s.stopping) openSocket(s); }, wait);
  }

  function encode(s, x) {
    const y = s.resampler ? s.resampler.process(x) : x;
    return bytesToBase64(toS16le(y));
  }

  function sendAudio(s, pcm) {
    if (!s.ws || s.ws.readyState !== WebSocket.OPEN) return;
    s.ws.send(JSON.stringify({ type: "audio", seq: s.seq++, pcm }));
  }

  function onBlock(s, block) {
    drawLevel(levelOf(block));
    const pcm = encode(s, block);
    s.sentSamples += block.length;
    $("mic-sent").textContent = (s.sentSamples / s.ctx.sampleRate).toFixed(1);
    if (s.ready) sendAudio(s, pcm);
    else {
      s.queue.push(pcm);
      if (s.queue.length > MAX_QUEUED) s.queue.shift();
    }
  }

  async function teardown(s, state, text) {
    if (s.retryTimer) clearTimeout(s.retryTimer);
    if (s.node) { s.node.port.onmessage = null; try { s.source.disconnect(); s.node.disconnect(); } catch { /* gone */ } }
    if (s.stream) for (const track of s.stream.getTracks()) track.stop();
    if (s.ctx) await s.ctx.close().catch(() => {});
    s.ctx = null;
    if (s.ws && s.ws.readyState <= WebSocket.OPEN) s.ws.close();
    if (current === s) current = null;
    $("mic-start").disabled = false;
    $("mic-start").textContent = "● Start streaming";
    $("mic-start").classList.remove("pp-recording");
    $("mic-stop").disabled = true;
    $("mic-level").style.width = "0";
    setStatus(state, text);
  }

  async function stop() {
    const s = current;
    if (!s || s.stopping) return;
    s.stopping = true;
    $("mic-stop").disabled = true;
    setStatus("connecting", "finishing…");
    if (s.node) {
      s.node.port.postMessage("flush");
      await new Promise((resolve) => setTimeout(resolve, 150));
      s.node.port.onmessage = null;
    }
    if (s.ws && s.ws.readyState === WebSocket.OPEN && s.ready) {
      s.ws.send(JSON.stringify({ type: "end" }));
      // the server finishes the open segment, sends its final event, then bye and closes
      await new Promise((resolve) => {
        if (s.closed) return resolve();
        s.closedWaiter = resolve;
        setTimeout(resolve, 15000);
      });
    }
    const stats = s.bye && s.bye.stats;
    await teardown(s, "stopped", stats ? `stopped: ${stats.segments} segment(s), ${Number(stats.audio_s).toFixed(1)} s` : "stopped");
  }

  $("mic-start").addEventListener("click", start);
  $("mic-stop").addEventListener("click", stop);
  window.addEventListener("pagehide", () => { if (current) stop(); });
})();
