// Audio helpers shared by the people page and the browser-microphone page.
// Loaded before the page's own script; defines the global `AudioUtils`.
"use strict";

window.AudioUtils = (() => {
  // Sample rates the wire protocol accepts in `hello` and in request `pcm`.
  const RATES = [8000, 16000, 22050, 24000, 32000, 44100, 48000];

  // Bytes -> base64, in slices so that long recordings do not overflow the call stack.
  function bytesToBase64(bytes) {
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  }

  // Float32 samples in [-1, 1] -> s16le bytes.
  function toS16le(x) {
    const out = new Int16Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const v = Math.max(-1, Math.min(1, x[i]));
      out[i] = Math.round(v < 0 ? v * 32768 : v * 32767);
    }
    return new Uint8Array(out.buffer);
  }

  // RMS level (dBFS, -120 for silence) and peak of one block.
  function levelOf(block) {
    let sum = 0;
    let peak = 0;
    for (let i = 0; i < block.length; i++) {
      const v = block[i];
      sum += v * v;
      const a = Math.abs(v);
      if (a > peak) peak = a;
    }
    const rms = Math.sqrt(sum / Math.max(1, block.length));
    return { dbfs: rms > 1e-6 ? 20 * Math.log10(rms) : -120, peak };
  }

  // Show a level on a meter bar (-60..0 dBFS), flagging clipping and quiet input.
  function drawLevel(bar, level) {
    const share = Math.max(0, Math.min(1, (level.dbfs + 60) / 60));
    bar.style.width = `${(share * 100).toFixed(1)}%`;
    bar.dataset.dbfs = level.dbfs.toFixed(1);
    bar.classList.toggle("pp-clip", level.peak >= 0.99);
    bar.classList.toggle("pp-quiet", level.dbfs < -45);
  }

  return { RATES, bytesToBase64, toS16le, levelOf, drawLevel };
})();
