// A plain RTCPeerConnection as the far party of one call (no SIP stack): the Python test carries
// the SDP. Used where the signalling does not matter, only what Chromium's WebRTC accepts (a
// call's media taken over by a new process, issue #11). The call's id is "pc".
"use strict";

let peer = null;

const gathered = (pc) => new Promise((ok) => {
  if (pc.iceGatheringState === "complete") return ok();
  pc.addEventListener("icegatheringstatechange", () => {
    if (pc.iceGatheringState === "complete") ok();
  });
});

async function local(pc, description) {
  await pc.setLocalDescription(description);
  await gathered(pc);  // non-trickle: the SDP carries every candidate, as in SIP
  return pc.localDescription.sdp;
}

var adapter = {
  pc: () => peer,
  state: () => (peer ? peer.connectionState : "none"),
};

Object.assign(window.api, {
  now: () => performance.now(),
  // Answer an offer (the first one creates the peer connection with the microphone).
  async pcAnswer(sdp) {
    if (!peer) {
      peer = new RTCPeerConnection();
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      stream.getTracks().forEach((t) => peer.addTrack(t, stream));
    }
    await peer.setRemoteDescription({ type: "offer", sdp });
    return local(peer, await peer.createAnswer());
  },
  async pcOffer(iceRestart) { return local(peer, await peer.createOffer({ iceRestart })); },
  async pcApplyAnswer(sdp) { await peer.setRemoteDescription({ type: "answer", sdp }); },
  // performance.now() of the first 20 ms poll after `sinceMs` whose peak is `hz` (±20 Hz,
  // > -60 dBFS) and stays so for 100 ms; null when not within `timeoutMs`.
  async pcHeardAt(hz, sinceMs, timeoutMs) {
    await audio.resume();
    let first = null;
    try {
      await until(async () => {
        const p = listener("pc").peak();
        const match = Math.abs(p.hz - hz) <= 20 && p.db > -60 && performance.now() >= sinceMs;
        first = match ? (first ?? performance.now()) : null;
        return { ok: match && performance.now() - first >= 100, ...p };
      }, timeoutMs, `hearing ${hz} Hz`);
    } catch (e) {
      return null;
    }
    return first;
  },
});
