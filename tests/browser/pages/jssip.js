// JsSIP 3.x behind the page's uniform call API.
"use strict";

const jsCalls = new Map();
let jsUa = null;

function jsTrack(session) {
  const id = `c${jsCalls.size + 1}`;
  const entry = { session, state: "calling" };
  jsCalls.set(id, entry);
  session.on("progress", () => { if (entry.state === "calling") entry.state = "ringing"; });
  session.on("confirmed", () => { entry.state = "answered"; });
  session.on("ended", (e) => { entry.state = "ended"; entry.cause = e.cause; });
  session.on("failed", (e) => { entry.state = "ended"; entry.cause = e.cause; });
  return id;
}

function jsEntry(id) {
  const entry = jsCalls.get(id);
  if (!entry) throw new Error(`no call ${id}`);
  return entry;
}

const jsMedia = async () => ({
  mediaStream: await navigator.mediaDevices.getUserMedia({ audio: true }),
  pcConfig: { iceServers: [] },
  sessionTimersExpires: 120,
});

window.adapter = {
  incoming: [],
  referred: [],
  async start({ wsUrl, user, domain, password }) {
    const socket = new JsSIP.WebSocketInterface(wsUrl);
    jsUa = new JsSIP.UA({
      sockets: [socket], uri: `sip:${user}@${domain}`, password, authorization_user: user,
      register: true, register_expires: 60, session_timers: false, user_agent: "JsSIP-test",
    });
    jsUa.on("newRTCSession", ({ session, originator }) => {
      const id = jsTrack(session);
      if (originator === "remote") { jsEntry(id).state = "ringing"; adapter.incoming.push(id); }
      else if (adapter.transferring) { adapter.transferring = false; adapter.referred.push(id); }
      // An INVITE with Replaces (RFC 3891) for this call: take it; it arrives as a new
      // incoming call, and this one ends once that one is confirmed.
      session.on("replaces", ({ accept }) => accept());
      // Transferred (REFER): call the target at once; that call is listed in `referred`.
      session.on("refer", ({ accept }) => {
        navigator.mediaDevices.getUserMedia({ audio: true }).then((mediaStream) => {
          adapter.transferring = true;
          accept(() => {}, { mediaStream, pcConfig: { iceServers: [] } });
        });
      });
    });
    const registered = new Promise((ok, fail) => {
      jsUa.once("registered", () => ok(true));
      jsUa.once("registrationFailed", (e) => fail(new Error(`registration failed: ${e.cause}`)));
    });
    jsUa.start();
    return registered;
  },
  async stop() {
    if (!jsUa) return true;
    const ua = jsUa;
    jsUa = null;
    const gone = new Promise((ok) => ua.once("unregistered", ok));
    ua.stop();
    await Promise.race([gone, new Promise((ok) => setTimeout(ok, 2000))]);
    return true;
  },
  async call(target) {
    const domain = jsUa.configuration.uri.host;
    const created = new Promise((ok) => jsUa.once("newRTCSession", ({ session }) => ok(session)));
    jsUa.call(`sip:${target}@${domain}`, await jsMedia());
    const session = await created;
    return [...jsCalls].find(([, e]) => e.session === session)[0];
  },
  async answer(id) {
    const entry = jsEntry(id);
    entry.session.answer(await jsMedia());
    await api.waitState(id, ["answered", "ended"]);
    return true;
  },
  decline(id) { jsEntry(id).session.terminate({ status_code: 486 }); return true; },
  hangup(id) { jsEntry(id).session.terminate(); return true; },
  hold(id) {
    return new Promise((ok, fail) => {
      if (!jsEntry(id).session.hold({}, () => ok(true))) fail(new Error("hold refused"));
    });
  },
  unhold(id) {
    return new Promise((ok, fail) => {
      if (!jsEntry(id).session.unhold({}, () => ok(true))) fail(new Error("unhold refused"));
    });
  },
  mute(id) { jsEntry(id).session.mute({ audio: true }); return true; },
  unmute(id) { jsEntry(id).session.unmute({ audio: true }); return true; },
  dtmf(id, tones) {
    // RFC 4733 (JsSIP's "RFC2833"), as webphone and the RingCentral SDK send it.
    jsEntry(id).session.sendDTMF(tones, { transportType: "RFC2833", duration: 200, interToneGap: 150 });
    return true;
  },
  transfer(id, target) {
    const domain = jsUa.configuration.uri.host;
    jsEntry(id).session.refer(`sip:${target}@${domain}`);
    return true;
  },
  pc: (id) => jsEntry(id).session.connection,
  state: (id) => jsEntry(id).state,
  info(id) {
    const e = jsEntry(id);
    return { state: e.state, cause: e.cause ?? null, callId: e.session.id, direction: e.session.direction };
  },
};
