// The official RingCentral Web Phone SDK, unmodified, behind the page's uniform call API.
"use strict";

const rcCalls = new Map();
let rcPhone = null;

function rcTrack(session) {
  const id = `c${rcCalls.size + 1}`;
  rcCalls.set(id, session);
  return id;
}

function rcSession(id) {
  const session = rcCalls.get(id);
  if (!session) throw new Error(`no call ${id}`);
  return session;
}

window.adapter = {
  incoming: [],
  referred: [],  // never filled: the SDK answers no REFER (RingCentral's server transfers)
  async start({ sipInfo, instanceId }) {
    // autoAnswer stays at its default (true): it answers only INVITEs with Alert-Info: Auto Answer.
    rcPhone = new WebPhone({ sipInfo, instanceId, debug: true });
    rcPhone.on("inboundCall", (session) => adapter.incoming.push(rcTrack(session)));
    await rcPhone.start();
    return true;
  },
  async stop() { if (rcPhone) await rcPhone.dispose(); rcPhone = null; return true; },
  async call(target) {
    // WebPhone.call() resolves only on the final answer: keep its outcome, return the id at once.
    const created = new Promise((ok) => rcPhone.once("outboundCall", (s) => ok(rcTrack(s))));
    const done = rcPhone.call(target);
    const id = await created;
    rcSession(id).outcome = done.then(() => "ok", (e) => `error: ${e}`);
    return id;
  },
  async answer(id) { await rcSession(id).answer(); return true; },
  async decline(id) { await rcSession(id).decline(); return true; },
  async hangup(id) { await rcSession(id).hangup(); return true; },
  async hold(id) { await rcSession(id).hold(); return true; },
  async unhold(id) { await rcSession(id).unhold(); return true; },
  mute(id) { rcSession(id).mute(); return true; },
  unmute(id) { rcSession(id).unmute(); return true; },
  dtmf(id, tones) { rcSession(id).sendDtmf(tones, 200, 150); return true; },
  async transfer(id, target) { await rcSession(id).transfer(target); return true; },
  pc: (id) => rcSession(id).rtcPeerConnection,
  state(id) {
    const state = rcSession(id).state;
    // the SDK's names -> the page's: ringing | answered | ended
    return state === "disposed" || state === "failed" ? "ended" : state === "init" ? "calling" : state;
  },
  info(id) {
    const s = rcSession(id);
    return { state: s.state, callId: s.callId, direction: s.direction, remote: s.remoteNumber };
  },
};
