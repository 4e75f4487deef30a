"""A group member process for the continuity-plane tests (no SIP): it joins a group, answers
delegates, publishes continuity when it is the real, and prints what happens as JSON lines.

    python tests/support/plane_member.py --group g (--runtime-dir DIR | --hub URL) --id b \
        [--publish '{"c1": {...}}']

Delegates: "media.offer" is answered {"sdp": <args.sdp> + " answered", "pid": <our pid>};
"media.close" with args {"hold": true} is never answered (a delegate in flight to kill us in);
anything else is answered {"op": op}. Events: {"event": "ready"|"role"|"delegate"|
"continuity"|"member_lost", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from webphone.shared.member import GroupMember, LinkToken
from webphone.shared.protocol import Action, Continuity, Delegate, Released, Role, Snapshot
from webphone.shared.transports.base import GroupTransport, HubOptions

OPTIONS = HubOptions(heartbeat_interval=0.1, heartbeat_timeout=1.0, idle_timeout=2.0)


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


class PlaneMember:
    """A MemberListener and PlaneListener that records to stdout."""

    def __init__(self, publish: dict[str, Any] | None) -> None:
        self.member: GroupMember | None = None
        self.publish = publish

    def on_role(self, old: Role | None, new: Role, epoch: int) -> None:
        assert self.member is not None
        emit(event="role", role=new, epoch=epoch)
        if new == "real":
            self.member.registered(epoch)
            if self.publish is not None:
                self.member.publish_continuity(self.publish)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        pass

    def on_action(self, action: Action, token: LinkToken) -> None:
        assert self.member is not None
        self.member.send_result(token, action.action_id, value="ok")

    def on_released(self, released: Released) -> None:
        pass

    def on_delegate(self, request: Delegate, token: LinkToken) -> None:
        assert self.member is not None
        emit(event="delegate", op=request.op, call_id=request.call_id)
        if request.op == "media.close" and request.args.get("hold"):
            return
        if request.op == "media.offer":
            value: Any = {"sdp": f"{request.args.get('sdp', '')} answered", "pid": os.getpid()}
        else:
            value = {"op": request.op}
        self.member.send_delegate_result(token, request, value=value)

    def on_member_lost(self, member_id: str, reason: str) -> None:
        emit(event="member_lost", member_id=member_id, reason=reason)

    def on_continuity(self, state: Continuity) -> None:
        emit(event="continuity", version=list(state.version), calls=state.calls)


def transport(args: argparse.Namespace) -> GroupTransport:
    if args.hub:
        from webphone.shared.transports.redis import RedisTransport
        return RedisTransport(args.hub, OPTIONS)
    from webphone.shared.transports.local import LocalTransport
    return LocalTransport(OPTIONS, runtime_dir=Path(args.runtime_dir))


async def main(args: argparse.Namespace) -> None:
    listener = PlaneMember(json.loads(args.publish) if args.publish else None)
    member = GroupMember(transport(args), args.group, listener, member_id=args.id)
    listener.member = member
    await member.start(timeout=10)
    emit(event="ready", pid=os.getpid())
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--group", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--runtime-dir")
    parser.add_argument("--hub")
    parser.add_argument("--publish")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
