// AudioWorklet processor "pcm-capture": posts the input's first channel (the node
// downmixes to mono with channelCount 1) as Float32Array blocks of `blockSize` samples
// at the AudioContext's rate. Used by /people (recording) and /mic/NAME (streaming).
//
//   await ctx.audioWorklet.addModule("/static/pcm-worklet.js");
//   const node = new AudioWorkletNode(ctx, "pcm-capture",
//       {channelCount: 1, channelCountMode: "explicit", processorOptions: {blockSize: 2048}});
//   node.port.onmessage = (e) => use(e.data);   // a Float32Array, transferred
//   node.port.postMessage("flush");              // post what is buffered now
class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const size = (options && options.processorOptions && options.processorOptions.blockSize) || 2048;
    this.blockSize = Math.max(128, Math.floor(size));
    this.buffer = new Float32Array(this.blockSize);
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.flush();
    };
  }

  flush() {
    if (this.filled === 0) return;
    const block = this.buffer.slice(0, this.filled);
    this.port.postMessage(block, [block.buffer]);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0];
    const channel = input && input[0];
    if (channel) {
      let offset = 0;
      while (offset < channel.length) {
        const n = Math.min(channel.length - offset, this.blockSize - this.filled);
        this.buffer.set(channel.subarray(offset, offset + n), this.filled);
        this.filled += n;
        offset += n;
        if (this.filled === this.blockSize) {
          const block = this.buffer;
          this.port.postMessage(block, [block.buffer]);
          this.buffer = new Float32Array(this.blockSize);
          this.filled = 0;
        }
      }
    }
    return true; // keep running while the page records
  }
}

registerProcessor("pcm-capture", PcmCapture);
