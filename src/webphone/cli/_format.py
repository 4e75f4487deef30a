"""How `webphone phone` prints its events: one text line or one JSON object per event.

Pure functions of the event dicts that `PhoneApp` emits (see `phone_app.py`); line mode and the
terminal frontend print `text_line`, `--json` prints `json_line`.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["FINAL", "Event", "call_text", "json_line", "status_text", "text_line"]

Event = dict[str, Any]

#: the states in which a call has ended
FINAL = ("failed", "disposed")


def json_line(event: Event) -> str:
    """One JSON object per event (what `--json` prints)."""
    return json.dumps(event, default=str)


def text_line(event: Event) -> str:
    """One human line per event."""
    name = event.get("event")
    if name == "ready":
        role = event["role"]
        what = "the real phone (holds the registration)" if role == "real" else \
            "a dummy (the real phone holds the registration; commands run there)"
        return (f"joined group {event['group']} as {what}; pid {event['pid']}, "
                f"member {event['member_id']}")
    if name == "role":
        return f"role: now {event['role']} (epoch {event['epoch']})"
    if name == "registered":
        return f"registered (expires in {event['expires']} s)"
    if name == "registration":
        reason = f": {event['reason']}" if event.get("reason") else ""
        return f"registration {event['state']}{reason}"
    if name == "binding_conflict":
        return f"warning: {event['message']} (held by {', '.join(event['contacts'])})"
    if name == "call":
        return "call " + call_text(event)
    if name == "result":
        return _result_text(event)
    if name == "notice":
        return str(event["message"])
    if name == "bye":
        return "left the group"
    if name == "fatal":
        return f"error: {event.get('error')}: {event.get('message')}"
    return json_line(event)


def call_text(call: Event) -> str:
    """One call as the text line and the status bar show it."""
    who = call.get("remote") or "?"
    if call.get("remote_name"):
        who += f" ({call['remote_name']})"
    direction = "from" if call.get("direction") == "inbound" else "to"
    flags = "".join(f" [{f}]" for f in ("held", "muted") if call.get(f))
    text = f"{call['ref']}: {call.get('direction')} {direction} {who}: {call['state']}{flags}"
    if call.get("duration") is not None:
        text += f" {_clock(call['duration'])}"
    if call.get("reason") and call["state"] in FINAL:
        text += f" ({call['reason']})"
    return text


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def status_text(status: Event) -> str:
    """The `status` result on one line."""
    members = status.get("members") or []
    real = sum(1 for m in members if m.get("role") == "real")
    text = (f"{status['user']}: {status['role']} (epoch {status['epoch']}), "
            f"registration {status['registration']}, {len(members)} member(s), {real} real")
    if status.get("binding_conflict"):
        text += f", REGISTRATION TAKEN by {', '.join(status['binding_conflict'])}"
    calls = status.get("calls") or []
    text += "; calls: " + ("; ".join(call_text(c) for c in calls) if calls else "none")
    return text


def _result_text(event: Event) -> str:
    cmd = event.get("cmd") or event.get("line")
    if not event.get("ok"):
        return f"error: {cmd}: {event.get('message')}"
    if "help" in event:
        return str(event["help"])
    if "status" in event:
        return status_text(event["status"])
    if "members" in event:
        return "members: " + ", ".join(
            f"pid {m.get('pid')} {m.get('role')}{' (this one)' if m.get('self') else ''}"
            for m in event["members"])
    ref = f" (call {event['ref']})" if event.get("ref") else ""
    return f"ok: {cmd}{ref}"
