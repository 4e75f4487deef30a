// What every test page shares: a microphone made of an OscillatorNode, remote audio measured by
// an AnalyserNode (the strongest frequency, and DTMF digits by their two frequencies), and the
// uniform call API the Python tests use on either stack (`adapter` is set by rc.js / jssip.js).
"use strict";

const audio = new AudioContext({ sampleRate: 48000 });
const oscillator = audio.createOscillator();
const micGain = audio.createGain();
oscillator.frequency.value = 1400;
micGain.gain.value = 0.5;
oscillator.connect(micGain);
oscillator.start();

// The microphone: every getUserMedia() gets a fresh track fed by the one oscillator (the SDK
// stops the first track it gets, to trigger the permission prompt, and asks again).
navigator.mediaDevices.getUserMedia = async () => {
  const destination = audio.createMediaStreamDestination();
  micGain.connect(destination);
  return destination.stream;
};
navigator.mediaDevices.enumerateDevices = async () => [
  { deviceId: "oscillator", kind: "audioinput", label: "oscillator", groupId: "test" },
  { deviceId: "default", kind: "audiooutput", label: "default", groupId: "test" },
];

const DTMF_LOW = [697, 770, 852, 941];
const DTMF_HIGH = [1209, 1336, 1477, 1633];
const DTMF_KEYS = ["123A", "456B", "789C", "*0#D"];

class Listener {
  // The far end's audio of one call: an AnalyserNode on the receiver's track, polled every
  // 10 ms for DTMF (digits are recorded at their onset).
  constructor(track) {
    this.track = track;
    // Chromium feeds a remote WebRTC track into WebAudio only while a media element plays it.
    this.element = new Audio();
    this.element.muted = true;
    this.element.srcObject = new MediaStream([track]);
    this.element.play().catch(() => {});
    this.source = audio.createMediaStreamSource(new MediaStream([track]));
    this.analyser = audio.createAnalyser();
    this.analyser.fftSize = 4096;
    this.analyser.smoothingTimeConstant = 0;
    this.source.connect(this.analyser);
    this.bins = new Float32Array(this.analyser.frequencyBinCount);
    this.digits = "";
    this.current = null;
    this.candidate = null;
    this.count = 0;
    this.since = 0;
    this.trace = "";
    this.timer = setInterval(() => this.pollDtmf(), 10);
  }
  level(hz) {
    const width = audio.sampleRate / this.analyser.fftSize;
    const bin = Math.round(hz / width);
    return Math.max(this.bins[bin - 1], this.bins[bin], this.bins[bin + 1]);
  }
  sample() { this.analyser.getFloatFrequencyData(this.bins); }
  peak() {
    // The strongest frequency between 200 Hz and 4 kHz, and its level in dBFS.
    this.sample();
    const width = audio.sampleRate / this.analyser.fftSize;
    let best = -Infinity, at = 0;
    for (let i = Math.ceil(200 / width); i < 4000 / width; i++) {
      if (this.bins[i] > best) { best = this.bins[i]; at = i; }
    }
    return { hz: Math.round(at * width), db: Math.round(best) };
  }
  pollDtmf() {
    this.sample();
    const strongest = (freqs) => {
      const levels = freqs.map((f) => this.level(f));
      const i = levels.indexOf(Math.max(...levels));
      const others = levels.filter((_, j) => j !== i);
      return { i, db: levels[i], margin: levels[i] - Math.max(...others) };
    };
    const low = strongest(DTMF_LOW), high = strongest(DTMF_HIGH);
    const on = low.db > -60 && high.db > -60 && low.margin > 10 && high.margin > 10;
    const key = on ? DTMF_KEYS[low.i][high.i] : null;
    // A digit counts once it held for 40 ms (and 2 polls), and again only after 40 ms of
    // something else: the analyser's 85 ms window smears onsets and ends over a few polls, and
    // timers run late on a loaded machine, so this goes by the clock, not by the poll count.
    const now = performance.now();
    if (key === this.candidate) this.count += 1;
    else {
      // what the detector saw, for failure messages: "3:180 -:150 7:20 ..." (key:ms)
      this.trace = `${this.trace} ${this.candidate ?? "-"}:${Math.round(now - this.since)}`.slice(-400);
      this.candidate = key; this.count = 1; this.since = now;
    }
    if (this.count >= 2 && now - this.since >= 40 && key !== this.current) {
      this.current = key;
      if (key !== null) this.digits += key;
    }
  }
  close() {
    clearInterval(this.timer);
    this.source.disconnect();
    this.element.srcObject = null;
  }
}

const listeners = new Map();

function listener(id) {
  const pc = adapter.pc(id);
  if (!pc) throw new Error(`call ${id} has no peer connection`);
  const receiver = pc.getReceivers().find((r) => r.track && r.track.kind === "audio");
  if (!receiver) throw new Error(`call ${id} receives no audio track`);
  let entry = listeners.get(id);
  if (!entry || entry.track !== receiver.track) {
    if (entry) entry.close();
    entry = new Listener(receiver.track);
    listeners.set(id, entry);
  }
  return entry;
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function until(check, timeoutMs, what) {
  const deadline = performance.now() + timeoutMs;
  let last;
  while (performance.now() < deadline) {
    last = await check();
    if (last && last.ok) return last;
    await sleep(20);
  }
  throw new Error(`${what} not met within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}

// The API the Python tests call (page.eval("api.xxx(...)")): the same on both stacks.
window.api = {
  setTone(hz) { oscillator.frequency.value = hz; return hz; },
  // A tone of `hz` (±20 Hz) stands out (> -60 dBFS) in the call's received audio for 200 ms.
  async hears(id, hz, timeoutMs = 8000) {
    await audio.resume();
    let since = null;
    return until(async () => {
      const p = listener(id).peak();
      const match = Math.abs(p.hz - hz) <= 20 && p.db > -60;
      since = match ? (since ?? performance.now()) : null;
      return { ok: match && performance.now() - since >= 200, ...p };
    }, timeoutMs, `hearing ${hz} Hz on ${id}`);
  },
  // Nothing above -70 dBFS for 400 ms.
  async silent(id, timeoutMs = 8000) {
    await audio.resume();
    let since = null;
    return until(async () => {
      const p = listener(id).peak();
      since = p.db < -70 ? (since ?? performance.now()) : null;
      return { ok: since !== null && performance.now() - since >= 400, ...p };
    }, timeoutMs, `silence on ${id}`);
  },
  async digits(id, want, timeoutMs = 8000) {
    await audio.resume();
    return until(async () => {
      const got = listener(id).digits;
      return { ok: got.endsWith(want), digits: got, seen: listener(id).trace };
    }, timeoutMs, `DTMF ${want} on ${id}`);
  },
  async waitState(id, states, timeoutMs = 10000) {
    return until(async () => {
      const state = adapter.state(id);
      return { ok: states.includes(state), state };
    }, timeoutMs, `call ${id} in ${states}`);
  },
  async waitReferred(timeoutMs = 10000) {
    const r = await until(async () => {
      const id = adapter.referred.shift();
      return { ok: id !== undefined, id };
    }, timeoutMs, "a call made for a transfer");
    return r.id;
  },
  async waitIncoming(timeoutMs = 10000) {
    const r = await until(async () => {
      const id = adapter.incoming.shift();
      return { ok: id !== undefined, id };
    }, timeoutMs, "an incoming call");
    return r.id;
  },
  state: (id) => adapter.state(id),
  info: (id) => adapter.info(id),
  start: (config) => adapter.start(config),
  stop: () => adapter.stop(),
  call: (target) => adapter.call(target),
  answer: (id) => adapter.answer(id),
  decline: (id) => adapter.decline(id),
  hangup: (id) => adapter.hangup(id),
  hold: (id) => adapter.hold(id),
  unhold: (id) => adapter.unhold(id),
  mute: (id) => adapter.mute(id),
  unmute: (id) => adapter.unmute(id),
  dtmf: (id, tones) => adapter.dtmf(id, tones),
  transfer: (id, target) => adapter.transfer(id, target),
  // Every remote candidate address the call's ICE agent knows (to check loopback-only peers).
  async remoteCandidates(id) {
    const stats = await adapter.pc(id).getStats();
    const out = [];
    stats.forEach((s) => { if (s.type === "remote-candidate") out.push(`${s.address}:${s.port} ${s.candidateType}`); });
    return out;
  },
  async selectedPair(id) {
    const stats = await adapter.pc(id).getStats();
    let pair = null;
    stats.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId), remote = stats.get(pair.remoteCandidateId);
    return { local: `${local.address}:${local.port}`, remote: `${remote.address}:${remote.port}` };
  },
  localSdp: (id) => adapter.pc(id)?.localDescription?.sdp ?? null,
};
