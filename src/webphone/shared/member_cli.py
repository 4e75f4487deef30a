"""A group member driven by JSON lines: for system tests, benchmarks and debugging.

    python -m webphone.shared.member_cli --sip-info sip-info.json [--group G]
        [--runtime-dir DIR] [--heartbeat-interval S] [--heartbeat-timeout S] [--hub-timeout S]
        [--idle-timeout S] [--action-timeout S] [--register-expires S] [--no-media]
        [--media taker|real|dummy] [--tone HZ] [--hear HZ,HZ] [--loopback-media] [--hub URL]

It joins the group with a `SharedWebPhone` and prints one JSON object per line on stdout for
everything that happens; every line has "event" and "t" (time.monotonic(), which is one clock
for every process of the host):

    {"event": "ready", "role": "real", "member_id": ..., "pid": ..., "hub_pid": ...}
    {"event": "role", "role": "dummy", "epoch": 3}
    {"event": "sip_out", "method": "REGISTER", "expires": "60"}   every REGISTER sent
    {"event": "registered", "contact": "<sip:...>", "expires": 60}
    {"event": "promotion_failed", "error": "AuthenticationError", "message": ...}  role given up
    {"event": "disconnected", "reason": ...}  /  {"event": "reconnected"}  the real's SIP server
    {"event": "inbound_call" | "outbound_call", "call_id": ..., "state": ..., "remote": ...}
    {"event": "call_state", "call_id": ..., "state": "answered"}
    {"event": "media_moved" | "adopted", "call_id": ...}      the phone's events, on this member
    {"event": "holding", "call_id": ..., "tone": 1000.0}      this member holds the call's media
                                                            (and plays --tone into it)
    {"event": "heard", "call_id": ..., "hz": 440.0}         the dominant --hear tone of its
                                                            received audio changed (None: none)
    {"event": "result", "id": 7, "ok": true, "value": ...}  /  "ok": false, "error": "CallError"
    {"event": "fatal", "error": ..., "message": ...}         start() failed; the process exits 1

Commands, one JSON object per line on stdin (an "id" is echoed in the result):

    {"id": 1, "cmd": "call", "callee": "102"}               -> value: {"call_id": ...}
    {"id": 2, "cmd": "session", "call_id": "...", "name": "answer", "args": {}}
    {"id": 3, "cmd": "members"}                             -> value: [member, ...]
    {"id": 6, "cmd": "action", "name": "hold", "call_id": "x", "args": {}}  raw group action
    {"id": 4, "cmd": "state"}                               -> role, epoch, calls, hub_pid
    {"id": 5, "cmd": "dispose", "timeout": 10, "drain": false} -> leaves (a real with calls
                                                    moves them, or drains them), then exits 0
    {"id": 7, "cmd": "tone", "call_id": "x", "hz": 1000}      play a tone into a call it holds
    {"id": 8, "cmd": "holds"}            -> {call_id: tone heard now} of the calls it holds
    {"id": 9, "cmd": "refresh_members"}  -> the real's media placement re-reads the members (a
                                            callable policy sees members that joined since)

`--tone HZ` makes a member a test media holder: whenever it holds a call's media (it answered
the call as its holder, the media moved to it, it adopted the call) it plays HZ into it and
reports the tones of `--hear` it hears, by frequency (tests/support/continuity.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from webphone.shared.phone import SharedWebPhone
from webphone.shared.tone_probe import TonePlayer, local_media
from webphone.shared.transports.base import HubOptions
from webphone.sip import SipRequest
from webphone.sip_info import SipInfo


def _out(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "t": time.monotonic(), **fields}, default=str)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _dummy_policy(call: dict[str, Any], members: list[dict[str, Any]]) -> str | None:
    """`--media dummy`: the taker unless it is the real, else the youngest live dummy (the
    oldest is the next real: a holder there would make the real's loss a loss of both); None
    (the real) when no dummy is left. For tests and benchmarks that kill media holders again
    and again without touching the real."""
    dummies = [str(m["member_id"]) for m in members if m.get("role") == "dummy"]  # oldest 1st
    reals = {m["member_id"] for m in members if m.get("role") == "real"}
    taker = call.get("taker")
    if taker is not None and taker not in reals:  # the member list may lag behind a new taker
        return str(taker)
    return dummies[-1] if dummies else None


_POLICIES: dict[str, Any] = {"dummy": _dummy_policy}


def _session_info(session: Any) -> dict[str, Any]:
    return {"call_id": session.call_id, "state": session.state,
            "direction": getattr(session, "direction", None),
            "remote": getattr(session, "remote_number", None)}


class _Cli:
    def __init__(self, shared: SharedWebPhone, holder: TonePlayer) -> None:
        self.shared = shared
        self.holder = holder
        self.done = asyncio.Event()
        for event in ("media_moved", "adopted"):
            shared.on(event, self._moved(event))
        shared.on("role", lambda role: _out("role", role=role, epoch=shared.epoch))
        shared.on("outbound_message", self._sip_out)
        shared.on("media_ready", lambda: _out("media_ready"))
        shared.on("registered", self._registered)
        shared.on("promotion_failed", lambda exc: _out(
            "promotion_failed", error=type(exc).__name__, message=str(exc)))
        shared.on("disconnected", lambda reason: _out("disconnected", reason=reason))
        shared.on("reconnected", lambda: _out("reconnected"))
        shared.on("inbound_call", self._call("inbound_call"))
        shared.on("outbound_call", self._call("outbound_call"))

    def _sip_out(self, message: Any) -> None:
        if isinstance(message, SipRequest) and message.method == "REGISTER":
            _out("sip_out", method="REGISTER", expires=message.headers.get("Expires"))

    def _registered(self, expires: int) -> None:
        shared = self.shared
        client = (shared._candidate or shared._real or shared.phone).sip_client
        _out("registered", contact=getattr(client, "contact", None), expires=expires)

    def _call(self, event: str) -> Any:
        def handler(session: Any) -> None:
            _out(event, **_session_info(session))
            for state in ("ringing", "answered", "failed", "disposed"):
                session.on(state, lambda *_, s=session, st=state: self._state(s, st))

        return handler

    def _state(self, session: Any, state: str) -> None:
        _out("call_state", call_id=session.call_id, state=state)
        if state == "answered":
            self.holder.check(session)

    def _moved(self, event: str) -> Any:
        def handler(session: Any, *_: Any) -> None:
            _out(event, call_id=session.call_id)
            self.holder.check(session)

        return handler

    def _find(self, call_id: str) -> Any:
        for session in self.shared.call_sessions:
            if session.call_id == call_id:
                return session
        raise LookupError(f"no call {call_id!r} in call_sessions")

    async def command(self, cmd: dict[str, Any]) -> None:
        ident = cmd.get("id")
        try:
            value = await self._run(cmd)
        except Exception as exc:
            _out("result", id=ident, ok=False, error=type(exc).__name__, message=str(exc))
        else:
            _out("result", id=ident, ok=True, value=value)

    async def _run(self, cmd: dict[str, Any]) -> Any:
        name = cmd.get("cmd")
        shared = self.shared
        if name == "call":
            session = await shared.call(cmd["callee"])
            return {"call_id": session.call_id, "state": session.state}
        if name == "session":
            session = self._find(cmd["call_id"])
            value = await getattr(session, cmd["name"])(**cmd.get("args", {}))
            self.holder.check(session)
            return value
        if name == "tone":
            media = local_media(self._find(cmd["call_id"]))
            if media is None:
                raise LookupError(f"this member does not hold the media of {cmd['call_id']!r}")
            self.holder.play(media, float(cmd["hz"]))
            return None
        if name == "holds":
            return self.holder.holds()
        if name == "refresh_members":  # the real's placement reads the member list again
            return len(await shared._placement.refresh_members())
        if name == "action":  # a raw group action, forwarded to the real even from the real
            return await shared._request(cmd["name"], cmd.get("call_id"), cmd.get("args", {}))
        if name == "members":
            return await shared.members()
        if name == "state":
            member = shared.member
            return {"role": shared.role, "epoch": shared.epoch,
                    "calls": [_session_info(s) for s in shared.call_sessions],
                    "hub_pid": member.peer_pid if member else None,
                    "registered": bool(getattr(shared.phone.sip_client, "registered", False)),
                    "aiortc_loaded": "aiortc" in sys.modules}
        if name == "dispose":
            await shared.dispose(timeout=cmd.get("timeout"), drain=bool(cmd.get("drain")))
            self.done.set()
            return None
        raise ValueError(f"unknown command {name!r}")


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def _load_sip_info(value: str) -> SipInfo:
    """`--sip-info`: a path to a JSON file, or the JSON itself."""
    text = value if value.lstrip().startswith("{") else Path(value).read_text(encoding="utf-8")
    return SipInfo.from_dict(json.loads(text))


async def main_async(args: argparse.Namespace) -> int:
    options = HubOptions(heartbeat_interval=args.heartbeat_interval,
                         heartbeat_timeout=args.heartbeat_timeout,
                         idle_timeout=args.idle_timeout)
    shared = SharedWebPhone(_load_sip_info(args.sip_info), group=args.group,
                            runtime_dir=args.runtime_dir, hub_options=options,
                            hub_timeout=args.hub_timeout, action_timeout=args.action_timeout,
                            preload_media=not args.no_media, member_id=args.member_id,
                            register_expires=args.register_expires,
                            media_timeout=args.media_timeout,
                            loopback_media=args.loopback_media,
                            # only when given: a wrapper may bind hub= (tests/system/
                            # test_redis_group.py does), and an explicit "local" would win
                            **({"hub": args.hub} if args.hub else {}),
                            **({"media": _POLICIES.get(args.media, args.media)}
                               if args.media else {}))
    hear = tuple(float(hz) for hz in args.hear.split(",") if hz)
    player = TonePlayer(args.tone, hear, _out)
    player.attach(shared)
    cli = _Cli(shared, player)
    try:
        await shared.start()
    except Exception as exc:
        _out("fatal", error=type(exc).__name__, message=str(exc))
        return 1
    member = shared.member
    _out("ready", role=shared.role, epoch=shared.epoch, member_id=shared.member_id,
         pid=os.getpid(), hub_pid=member.peer_pid if member else None)
    reader = await _stdin_lines()
    tasks: set[asyncio.Task[None]] = set()
    while not cli.done.is_set():
        line_task = asyncio.ensure_future(reader.readline())
        done_task = asyncio.ensure_future(cli.done.wait())
        await asyncio.wait({line_task, done_task}, return_when=asyncio.FIRST_COMPLETED)
        done_task.cancel()
        if not line_task.done():
            line_task.cancel()
            break
        line = line_task.result()
        if not line:  # stdin closed: leave like a graceful exit
            await shared.dispose()
            break
        try:
            cmd = json.loads(line)
        except ValueError:
            _out("error", message=f"not JSON: {line[:80]!r}")
            continue
        task = asyncio.create_task(cli.command(cmd))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    _out("disposed")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m webphone.shared.member_cli``."""
    p = argparse.ArgumentParser(prog="python -m webphone.shared.member_cli")
    p.add_argument("--sip-info", required=True,
                   help="a sipInfo JSON file (keep it mode 0600); inline JSON works too, but "
                   "puts the password in the process list for every local user to read")
    p.add_argument("--group")
    p.add_argument("--hub", help="the group's hub: redis://... (default: the local hub)")
    p.add_argument("--runtime-dir")
    p.add_argument("--member-id")
    p.add_argument("--heartbeat-interval", type=float, default=0.5)
    p.add_argument("--heartbeat-timeout", type=float, default=3.0)
    p.add_argument("--hub-timeout", type=float, default=None)
    p.add_argument("--idle-timeout", type=float, default=10.0)
    p.add_argument("--action-timeout", type=float, default=10.0)
    p.add_argument("--register-expires", type=int, default=60)
    p.add_argument("--media-timeout", type=float, default=30.0,
                   help="end an answered call after this many seconds without audio")
    p.add_argument("--no-media", action="store_true", help="do not preload media when real")
    p.add_argument("--media", choices=("taker", "real", "dummy"),
                   help="media placement policy (default: SharedWebPhone's); dummy: the taker, "
                   "else a live dummy, never the real")
    p.add_argument("--tone", type=float, help="play this tone (Hz) into every call whose "
                   "media this member holds, and report what it hears")
    p.add_argument("--loopback-media", action="store_true",
                   help="ICE on 127.0.0.1 only (as the sandbox's parties)")
    p.add_argument("--hear", default="440", help="tones (Hz, comma-separated) to listen for")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s member[{os.getpid()}] %(name)s %(message)s")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
