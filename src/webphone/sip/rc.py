"""RingCentral's call-control dialect (pure): x-rc/agent XML, INFO JSON commands, RC headers.

Three kinds of message, all as they appear on the wire (reference: upstream-webphone-sdk.md
§2.10, the exact bodies below are what the upstream SDK's `RcMessage.toXml()` produces):

1. **x-rc/agent XML**, before an inbound call is answered. The INVITE carries a `P-rc` header
   `<Msg><Hdr SID=.. Req=.. From=.. To=.. Cmd="6"/><Bdy .../></Msg>`; the phone answers it with
   SIP MESSAGEs whose body echoes it (`reply_to_p_rc`): same SID and Req, From and To swapped,
   our `Cln` (authorizationId) first in the body. The server sends MESSAGEs back (Cmd 7
   AlreadyProcessed, 2 ServerFreeResources, 9 SessionClose), once per registered instance, each
   with that instance's `Cln` (`is_for_client`).
2. **INFO JSON commands** during a call: `{"request":{"reqid":1,"command":"callpark"}}`, answered
   by an INFO `{"response":{"reqid":1,"command":"callpark","result":{"code":0,...}}}`.
3. **Headers**: `p-rc-api-ids` (party and session ids), `p-rc-api-call-info`, and the
   auto-answer pair `Alert-Info: Auto Answer` + `Call-Info: <...>;Answer-After=N`.

The XML parser is `xml.etree.ElementTree` behind guards: a size bound, and any DOCTYPE or
ENTITY declaration is refused before parsing (no entity expansion, no external entities), so
hostile input gives `RcMessageError`, never a crash or a blow-up.

The module is longer than ~500 lines because it holds every RingCentral message kind with
its exact wire form side by side; each part is small and pure.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET  # guarded: size bound, DTD/entities refused
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from ..errors import CallError, SipParseError
from ._grammar import is_digits

__all__ = [
    "INFO_COMMANDS",
    "INFO_CONTENT_TYPE",
    "MAX_RC_XML",
    "RC_MESSAGE_CONTENT_TYPE",
    "InfoResult",
    "InvalidReplyOptionsError",
    "RcApiIds",
    "RcCommand",
    "RcMessage",
    "RcMessageError",
    "ReplyOptions",
    "SessionClose",
    "auto_answer_delay",
    "build_info_command",
    "confirm_receive",
    "decline",
    "forward",
    "is_already_processed",
    "is_for_client",
    "is_server_free_resources",
    "parse_info_result",
    "parse_rc_api_call_info",
    "parse_rc_api_ids",
    "parse_rc_message",
    "parse_session_close",
    "reply",
    "reply_body",
    "reply_to_p_rc",
    "request_uri",
    "start_reply",
    "to_voicemail",
]

RC_MESSAGE_CONTENT_TYPE = "x-rc/agent"
INFO_CONTENT_TYPE = "application/json;charset=utf-8"
MAX_RC_XML = 16 * 1024
"""Largest x-rc/agent document accepted (real ones are a few hundred bytes)."""
MAX_INFO_JSON = 64 * 1024


class RcMessageError(SipParseError):
    """An x-rc/agent XML document (P-rc header or MESSAGE body) that is malformed or refused."""


class InvalidReplyOptionsError(CallError, ValueError):
    """`reply()` options that do not map to an RC reply; raised before anything is sent."""


class RcCommand(IntEnum):
    """`Cmd` codes of x-rc/agent messages (upstream `call-control-commands.ts`)."""

    # server -> client
    CHANGE_MESSAGE = 1
    SERVER_FREE_RESOURCES = 2
    NEW_MSG = 3
    RE_LOGIN = 4
    CHANGE_PHONES = 5
    INCOMING_CALL = 6
    ALREADY_PROCESSED = 7
    CLIENT_MINIMIZE = 8
    SESSION_CLOSE = 9
    # client -> server
    CLIENT_FORWARD = 10
    CLIENT_VOICEMAIL = 11
    CLIENT_REJECT = 12
    CLIENT_START_REPLY = 13
    CLIENT_REPLY = 14
    CLIENT_NOT_PROCESSED = 15
    CLIENT_CLOSED = 16
    CLIENT_RECEIVE_CONFIRM = 17


# -- the XML message -------------------------------------------------------------------------


def _escape(value: str) -> str:
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
    )


@dataclass
class RcMessage:
    """`<Msg><Hdr .../><Bdy .../></Msg>`: attributes only, in document order."""

    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, str] = field(default_factory=dict)

    @property
    def cmd(self) -> int | None:
        """`Hdr.Cmd` as an int, None when absent or not a number."""
        value = self.headers.get("Cmd", "").strip()
        return int(value) if is_digits(value) else None  # not "²": a digit, no number

    @property
    def sid(self) -> str | None:
        return self.headers.get("SID")

    @property
    def cln(self) -> str | None:
        """`Bdy.Cln`: the authorizationId of the instance this message is for (or from)."""
        return self.body.get("Cln")

    def to_xml(self) -> str:
        """Serialize like upstream: no declaration, self-closed elements, escaped attributes."""

        def element(name: str, attrs: Mapping[str, str]) -> str:
            text = "".join(f' {k}="{_escape(v)}"' for k, v in attrs.items())
            return f"<{name}{text}/>"

        return f"<Msg>{element('Hdr', self.headers)}{element('Bdy', self.body)}</Msg>"


_PRC_PREFIX = re.compile(r"^\s*P-rc\s*:\s*", re.IGNORECASE)
_DTD = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_rc_message(data: str | bytes) -> RcMessage:
    """Parse a `P-rc` header value or an x-rc/agent MESSAGE body.

    A leading `P-rc:` (as upstream tolerates) is stripped. Raises `RcMessageError` for anything
    that is not `<Msg>` with a `<Hdr>` element: too large, not XML, a DOCTYPE/ENTITY
    declaration, or the wrong shape. A missing `<Bdy>` gives an empty body.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_RC_XML:
            raise RcMessageError(f"x-rc/agent XML too large ({len(data)} > {MAX_RC_XML} bytes)")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RcMessageError(f"x-rc/agent XML is not UTF-8: {exc}") from None
    if len(data.encode("utf-8")) > MAX_RC_XML:
        raise RcMessageError(f"x-rc/agent XML too large (> {MAX_RC_XML} bytes)")
    text = _PRC_PREFIX.sub("", data, count=1).strip()
    if _DTD.search(text):
        raise RcMessageError("x-rc/agent XML with a DOCTYPE or ENTITY declaration is refused")
    try:
        root = ET.fromstring(text)  # noqa: S314  (no DTD possible: refused above)
    except ET.ParseError as exc:
        raise RcMessageError(f"malformed x-rc/agent XML ({exc}): {text[:200]!r}") from None
    if root.tag != "Msg":
        raise RcMessageError(f"x-rc/agent XML root is <{root.tag}>, expected <Msg>")
    hdr = root.find("Hdr")
    if hdr is None:
        raise RcMessageError(f"x-rc/agent XML has no <Hdr>: {text[:200]!r}")
    bdy = root.find("Bdy")
    return RcMessage(dict(hdr.attrib), dict(bdy.attrib) if bdy is not None else {})


def is_for_client(message: RcMessage, authorization_id: str) -> bool:
    """Whether a server message concerns this instance: no `Cln`, or `Cln` == our
    authorizationId. Others are answered 200 and otherwise ignored (upstream §2.1)."""
    cln = message.cln
    return cln is None or cln == authorization_id


def is_already_processed(message: RcMessage) -> bool:
    """Cmd 7: the call was handled (answered here or elsewhere)."""
    return message.cmd == RcCommand.ALREADY_PROCESSED


def is_server_free_resources(message: RcMessage) -> bool:
    """Cmd 2: the server released the call's resources (arrives around a BYE)."""
    return message.cmd == RcCommand.SERVER_FREE_RESOURCES


# -- building the client's messages ----------------------------------------------------------


def reply_to_p_rc(
    p_rc: RcMessage, cmd: int, authorization_id: str, extra: Mapping[str, str] | None = None
) -> RcMessage:
    """The message answering an INVITE's `P-rc`: the echo rules of upstream `sendRcMessage`.

    Hdr: SID and Req copied, From = P-rc To, To = P-rc From, Cmd = `cmd`; absent values are
    left out. Bdy: `Cln` = our authorizationId, then `extra` in order. The SIP MESSAGE goes to
    `sip:{result.headers["To"]}` (that is, the P-rc `From`) with Content-Type x-rc/agent.
    """
    headers = {
        "SID": p_rc.headers.get("SID"),
        "Req": p_rc.headers.get("Req"),
        "From": p_rc.headers.get("To"),
        "To": p_rc.headers.get("From"),
        "Cmd": str(int(cmd)),
    }
    body = {"Cln": authorization_id, **(extra or {})}
    return RcMessage({k: v for k, v in headers.items() if v is not None}, body)


def request_uri(message: RcMessage) -> str:
    """Request-URI of the SIP MESSAGE that carries `message`: `sip:{Hdr.To}`, written as the
    upstream SDK does (a `#` in the P-rc From is sent as is; RingCentral accepts it)."""
    to = message.headers.get("To")
    if not to:
        raise RcMessageError("x-rc/agent message has no Hdr To to address the MESSAGE to")
    return f"sip:{to}"


def confirm_receive(p_rc: RcMessage, authorization_id: str) -> RcMessage:
    """Cmd 17 ClientReceiveConfirm, sent on every inbound call after 180 (toVoicemail needs it)."""
    return reply_to_p_rc(p_rc, RcCommand.CLIENT_RECEIVE_CONFIRM, authorization_id)


def decline(p_rc: RcMessage, authorization_id: str) -> RcMessage:
    """Cmd 12 ClientReject."""
    return reply_to_p_rc(p_rc, RcCommand.CLIENT_REJECT, authorization_id)


def to_voicemail(p_rc: RcMessage, authorization_id: str) -> RcMessage:
    """Cmd 11 ClientVoicemail."""
    return reply_to_p_rc(p_rc, RcCommand.CLIENT_VOICEMAIL, authorization_id)


def forward(p_rc: RcMessage, authorization_id: str, target: str) -> RcMessage:
    """Cmd 10 ClientForward: `FwdDly="0" Phn="{target}" PhnTp="3"`."""
    if not target:
        raise CallError("forward() needs a target number")
    extra = {"FwdDly": "0", "Phn": target, "PhnTp": "3"}
    return reply_to_p_rc(p_rc, RcCommand.CLIENT_FORWARD, authorization_id, extra)


def start_reply(p_rc: RcMessage, authorization_id: str) -> RcMessage:
    """Cmd 13 ClientStartReply (the caller hears "please hold" while we pick a reply)."""
    return reply_to_p_rc(p_rc, RcCommand.CLIENT_START_REPLY, authorization_id)


@dataclass(frozen=True)
class ReplyOptions:
    """A structured reply (upstream `ReplyOptions`).

    type: "callYouBack" (needs direction, delay, unit), "callYouBackLater" (needs direction),
    "onMyWay", "onOtherLine", "inAMeeting", "onOtherLineNoCall" (need nothing else).
    direction: "toCaller" | "fromCaller"; unit: "minutes" | "hours" | "days"; delay: int >= 0.
    snake_case spellings ("call_you_back", "to_caller") are accepted too.
    """

    type: str
    direction: str | None = None
    delay: int | None = None
    unit: str | None = None


_REPLY_TYPES = {
    "callYouBack": 1,
    "onMyWay": 2,
    "onOtherLine": 3,
    "callYouBackLater": 4,
    "inAMeeting": 5,
    "onOtherLineNoCall": 6,
}
_REPLY_DIRECTIONS = {"toCaller": "0", "fromCaller": "1"}
_REPLY_UNITS = {"minutes": "0", "hours": "1", "days": "2"}
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_REPLY_FIELDS = {"type", "direction", "delay", "unit"}


def _camel(value: Any) -> Any:
    if isinstance(value, str) and "_" in value:
        head, *rest = value.split("_")
        return head + "".join(part.capitalize() for part in rest)
    return value


def _invalid(why: str) -> InvalidReplyOptionsError:
    return InvalidReplyOptionsError(f"Invalid reply options: {why}")


def reply_body(options: str | ReplyOptions | Mapping[str, Any]) -> dict[str, str]:
    """The Bdy attributes (after Cln) of a Cmd 14 reply; `InvalidReplyOptionsError` otherwise.

    Text: `RepTp="0" Bdy="{text}"`. Structured: `RepTp` = callYouBack 1, onMyWay 2,
    onOtherLine 3, callYouBackLater 4, inAMeeting 5, onOtherLineNoCall 6; `Dir` toCaller 0 /
    fromCaller 1 (types 1 and 4); `Vl` = delay and `Units` minutes 0 / hours 1 / days 2
    (type 1). Fields a type does not take are refused rather than silently dropped.
    """
    if isinstance(options, str):
        if not options:
            raise _invalid("the reply text is empty")
        if _XML_INVALID.search(options):
            raise _invalid("the reply text contains control characters XML cannot carry")
        return {"RepTp": "0", "Bdy": options}
    if isinstance(options, ReplyOptions):
        given = {k: v for k, v in vars(options).items() if v is not None}
    elif isinstance(options, Mapping):
        unknown = set(options) - _REPLY_FIELDS
        if unknown:
            raise _invalid(f"unknown fields {sorted(unknown)}")
        given = {k: v for k, v in options.items() if v is not None}
    else:
        raise _invalid(f"expected text, ReplyOptions or a mapping, got {type(options).__name__}")
    kind = _camel(given.get("type"))
    if kind not in _REPLY_TYPES:
        raise _invalid(f"unknown type {given.get('type')!r}; expected one of {list(_REPLY_TYPES)}")
    needs = {"callYouBack": {"direction", "delay", "unit"}, "callYouBackLater": {"direction"}}
    wanted = needs.get(kind, set())
    missing = wanted - set(given)
    extra = set(given) - wanted - {"type"}
    if missing:
        raise _invalid(f"{kind} needs {sorted(missing)}")
    if extra:
        raise _invalid(f"{kind} takes no {sorted(extra)}")
    body = {"RepTp": str(_REPLY_TYPES[kind])}
    if "direction" in wanted:
        direction = _camel(given["direction"])
        if direction not in _REPLY_DIRECTIONS:
            raise _invalid(f"direction {given['direction']!r} is not 'toCaller' or 'fromCaller'")
        body["Dir"] = _REPLY_DIRECTIONS[direction]
    if "delay" in wanted:
        delay = given["delay"]
        if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
            raise _invalid(f"delay must be a non-negative int, got {delay!r}")
        unit = given["unit"]
        if unit not in _REPLY_UNITS:
            raise _invalid(f"unit {unit!r} is not one of {list(_REPLY_UNITS)}")
        body["Vl"] = str(delay)
        body["Units"] = _REPLY_UNITS[unit]
    return body


def reply(
    p_rc: RcMessage, authorization_id: str, options: str | ReplyOptions | Mapping[str, Any]
) -> RcMessage:
    """Cmd 14 ClientReply with text or structured options (validated first, see `reply_body`).
    The outcome arrives later as a SessionClose (Cmd 9) with the same SID."""
    return reply_to_p_rc(p_rc, RcCommand.CLIENT_REPLY, authorization_id, reply_body(options))


@dataclass(frozen=True)
class SessionClose:
    """Cmd 9 SessionClose: how the caller reacted to a `reply()`.

    `status` is Bdy.Sts ("0" means the caller responded); `response` is Bdy.Resp mapped to
    "yes" (1), "no" (2), "urgent" (3) or the raw value; `callback_number` is Bdy.ExtNfo (the
    number the caller typed, with "urgent"); `phone`/`name` identify the caller (Phn/Nm).
    """

    sid: str | None
    status: str | None
    response: str | None
    callback_number: str | None
    phone: str | None
    name: str | None
    message: RcMessage

    @property
    def responded(self) -> bool:
        return self.status == "0"


_RESPONSES = {"1": "yes", "2": "no", "3": "urgent"}


def parse_session_close(message: RcMessage) -> SessionClose | None:
    """A `SessionClose` when `message` is Cmd 9, else None."""
    if message.cmd != RcCommand.SESSION_CLOSE:
        return None
    body = message.body
    resp = body.get("Resp")
    return SessionClose(
        sid=message.sid,
        status=body.get("Sts"),
        response=_RESPONSES.get(resp, resp) if resp is not None else None,
        callback_number=body.get("ExtNfo"),
        phone=body.get("Phn"),
        name=body.get("Nm"),
        message=message,
    )


# -- INFO JSON commands ----------------------------------------------------------------------

INFO_COMMANDS = {
    "start_recording": "startcallrecord",
    "stop_recording": "stopcallrecord",
    "flip": "callflip",
    "park": "callpark",
}
"""Python action name -> wire command. The wire names are accepted as they are, too."""

_WIRE_COMMANDS = frozenset(INFO_COMMANDS.values())


@dataclass(frozen=True)
class InfoResult:
    """An INFO `{"response":{"reqid":..,"command":..,"result":{...}}}`.

    `code`/`description` come from `result` (None when absent); `extra` holds the other result
    keys (flip: number, target; park: "park extension"); `result` is the raw object.
    """

    reqid: int
    command: str
    code: int | None
    description: str | None
    extra: dict[str, Any]
    result: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.code == 0


def build_info_command(command: str, reqid: int, **args: str) -> bytes:
    """The INFO body: `{"request":{"reqid":1,"command":"callflip","target":"102"}}`, compact
    like JSON.stringify. `command` is a wire name or a key of `INFO_COMMANDS`."""
    wire = INFO_COMMANDS.get(command, command)
    if wire not in _WIRE_COMMANDS:
        raise CallError(
            f"unknown INFO command {command!r}; expected one of {sorted(INFO_COMMANDS)}"
        )
    if isinstance(reqid, bool) or not isinstance(reqid, int) or reqid < 0:
        raise CallError(f"INFO reqid must be a non-negative int, got {reqid!r}")
    request: dict[str, Any] = {"reqid": reqid, "command": wire, **args}
    return json.dumps({"request": request}, separators=(",", ":")).encode("utf-8")


def parse_info_result(body: str | bytes) -> InfoResult | None:
    """The command result in an inbound INFO body, or None when the body is not one (not JSON,
    no `response` object, no int reqid / str command): such INFOs are simply not ours."""
    if len(body) > MAX_INFO_JSON:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting is hostile too
        return None
    response = doc.get("response") if isinstance(doc, dict) else None
    if not isinstance(response, dict):
        return None
    reqid, command = response.get("reqid"), response.get("command")
    if isinstance(reqid, bool) or not isinstance(reqid, int) or not isinstance(command, str):
        return None
    result = response.get("result")
    result = result if isinstance(result, dict) else {}
    code = result.get("code")
    description = result.get("description")
    return InfoResult(
        reqid=reqid,
        command=command,
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        description=description if isinstance(description, str) else None,
        extra={k: v for k, v in result.items() if k not in ("code", "description")},
        result=result,
    )


# -- headers ---------------------------------------------------------------------------------


def _params(value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, val = part.strip().partition("=")
        if key and sep:
            params.setdefault(key.strip().lower(), val.strip())
    return params


@dataclass(frozen=True)
class RcApiIds:
    """`p-rc-api-ids: party-id=p-...-2;session-id=s-...` (RingCentral Call Control API ids)."""

    party_id: str | None
    session_id: str | None


def parse_rc_api_ids(value: str | None) -> RcApiIds:
    """Party and session id from `p-rc-api-ids`, in any order, keys case-insensitive.

    Upstream matches two regexes that need `party-id` to end in exactly one digit followed by
    `;` and `session-id` to be last; this reads `key=value` pairs instead."""
    if not value:
        return RcApiIds(None, None)
    params = _params(value)
    return RcApiIds(params.get("party-id") or None, params.get("session-id") or None)


def parse_rc_api_call_info(value: str | None) -> dict[str, str]:
    """`p-rc-api-call-info: callAttributes=queue-call,reject;callerIdName=...;queueName=...`
    as a dict (keys as written; a value may contain '=')."""
    info: dict[str, str] = {}
    for part in (value or "").split(";"):
        key, sep, val = part.strip().partition("=")
        if key and sep:
            info.setdefault(key.strip(), val.strip())
    return info


_ANSWER_AFTER = re.compile(r";\s*answer-after\s*=\s*(\d+)", re.IGNORECASE)


def _values(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def auto_answer_delay(
    alert_info: str | Iterable[str] | None, call_info: str | Iterable[str] | None = None
) -> float | None:
    """Seconds to wait before auto-answering, or None when the INVITE does not ask for it.

    Auto-answer is asked by `Alert-Info: Auto Answer` (case and inner spacing ignored; the
    common `<...>;info=alert-autoanswer` form is accepted too). The delay is the
    `Answer-After=N` parameter of `Call-Info` in **seconds** (0 when absent). The upstream SDK
    passes N straight to setTimeout, i.e. milliseconds, although RingCentral documents seconds:
    that is an upstream bug not reproduced here. Each argument is one header value or a list.
    """
    requested = False
    for value in _values(alert_info):
        normalized = " ".join(value.split()).lower()
        if normalized == "auto answer" or "info=alert-autoanswer" in normalized.replace(" ", ""):
            requested = True
    if not requested:
        return None
    for value in _values(call_info):
        match = _ANSWER_AFTER.search(value)
        if match:
            return float(int(match.group(1)))
    return 0.0
