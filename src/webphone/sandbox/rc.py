"""RingCentral's server side of the call-control dialect, pure: what the sandbox puts on inbound
INVITEs and what it answers to x-rc/agent MESSAGEs and INFO JSON commands.

Shapes follow live RingCentral traffic (upstream-webphone-sdk.md §2.10, and the captured
INVITE/MESSAGE in the upstream SDK's tests)::

    P-rc: <Msg><Hdr SID="35464233129848" Req="{EEB7D831-...}"
          From="#996016@sip.ringcentral.com:5060" To="17206666666*115" Cmd="6"/>
          <Bdy SrvLvl="-149699523" SrvLvlExt="406" Phn="+16506666666" Nm="WIRELESS CALLER"
          ToPhn="+16504223279" ToNm="Tyler Liu" RecUrl=""/></Msg>      (one line on the wire)
    p-rc-api-ids: party-id=p-33f7...-2;session-id=s-33f7...
    p-rc-api-call-info: callAttributes=reject,send-vm

    MESSAGE (server -> client, Content-Type x-rc/agent):
    <Msg><Hdr SID=".." Req="" From="#1024016@sip.ringcentral.com:5060"
          To="17206666666*115@sip.ringcentral.com:5060" Cmd="7"/><Bdy Cln="802398808016"
          IP="4294967295" Sts="0" CtrlCln=""/></Msg>

The XML writer and reader are `webphone.sip.rc`'s (the phone's own), so both ends agree.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from webphone.sip.rc import MAX_INFO_JSON, RcCommand, RcMessage

__all__ = [
    "API_CALL_INFO",
    "Identity",
    "InfoRequest",
    "RcCall",
    "info_result",
    "parse_info_request",
    "server_message",
]

API_CALL_INFO = "callAttributes=reject,send-vm"


@dataclass(frozen=True)
class Identity:
    """Who a party of a call is, as the P-rc header shows it."""

    extension: str
    name: str
    phone_number: str


@dataclass(frozen=True)
class RcCall:
    """The RingCentral ids of one inbound call: telephony session and the callee's party."""

    sid: str
    req: str
    agent: str
    session_id: str
    party_id: str

    @classmethod
    def new(cls, domain: str) -> RcCall:
        """Fresh ids shaped like RingCentral's."""
        token = secrets.token_hex(16)
        return cls(
            sid=str(10**13 + secrets.randbelow(9 * 10**13)),
            req="{" + str(uuid.uuid4()).upper() + "}",
            agent=f"#{100000 + secrets.randbelow(900000)}@{domain}:5060",
            session_id=f"s-{token}",
            party_id=f"p-{token}-2",
        )

    def p_rc(self, caller: Identity, callee: Identity) -> str:
        """The `P-rc` header value (Cmd 6 IncomingCall) for an INVITE to `callee`."""
        message = RcMessage(
            {
                "SID": self.sid,
                "Req": self.req,
                "From": self.agent,
                "To": callee.extension,
                "Cmd": str(int(RcCommand.INCOMING_CALL)),
            },
            {
                "SrvLvl": "-149699523",
                "SrvLvlExt": "406",
                "Phn": caller.phone_number,
                "Nm": caller.name,
                "ToPhn": callee.phone_number,
                "ToNm": callee.name,
                "RecUrl": "",
            },
        )
        return message.to_xml()

    def api_ids(self) -> str:
        """The `p-rc-api-ids` header value."""
        return f"party-id={self.party_id};session-id={self.session_id}"

    def headers(self, caller: Identity, callee: Identity) -> list[tuple[str, str]]:
        """Every RingCentral header of an inbound INVITE to `callee`."""
        return [
            ("p-rc-api-ids", self.api_ids()),
            ("p-rc-api-call-info", API_CALL_INFO),
            ("P-rc", self.p_rc(caller, callee)),
        ]

    @property
    def agent_user(self) -> str:
        """The user part of the agent address (`#123456`), what clients send MESSAGEs to."""
        return self.agent.split("@", 1)[0]


def server_message(
    call: RcCall,
    cmd: RcCommand,
    *,
    to_user: str,
    domain: str,
    cln: str,
    extra: dict[str, str] | None = None,
) -> bytes:
    """A server -> client x-rc/agent body (Cmd 2, 7 or 9) for the instance `cln`."""
    body = {"Cln": cln}
    if cmd == RcCommand.ALREADY_PROCESSED:
        body.update({"IP": "4294967295", "Sts": "0", "CtrlCln": ""})
    body.update(extra or {})
    message = RcMessage(
        {
            "SID": call.sid,
            "Req": "",
            "From": call.agent,
            "To": f"{to_user}@{domain}:5060",
            "Cmd": str(int(cmd)),
        },
        body,
    )
    return message.to_xml().encode("utf-8")


@dataclass(frozen=True)
class InfoRequest:
    """An INFO JSON command: `{"request":{"reqid":1,"command":"callpark", ...args}}`."""

    reqid: Any
    command: str
    args: dict[str, Any]


def parse_info_request(body: bytes) -> InfoRequest | None:
    """The command in an INFO body, or None when the body is not one (then it is relayed)."""
    if not body or len(body) > MAX_INFO_JSON:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    request = doc.get("request") if isinstance(doc, dict) else None
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        return None
    args = {k: v for k, v in request.items() if k not in ("reqid", "command")}
    return InfoRequest(request.get("reqid"), request["command"], args)


def info_result(request: InfoRequest, result: dict[str, Any]) -> bytes:
    """The INFO body answering `request`: `{"response":{"reqid":..,"command":..,"result":..}}`."""
    response = {"reqid": request.reqid, "command": request.command, "result": result}
    return json.dumps({"response": response}, separators=(",", ":")).encode("utf-8")
