"""webphone.sip.rc: RingCentral x-rc/agent XML, INFO JSON commands, RC headers.

The XML strings are real ones from RingCentral traces (upstream SDK test fixtures).
"""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webphone.errors import CallError, SipParseError
from webphone.sip import rc
from webphone.sip.rc import (
    InvalidReplyOptionsError,
    RcCommand,
    RcMessage,
    RcMessageError,
    ReplyOptions,
)

P_RC = (
    '<Msg><Hdr SID="35464233129848" Req="{EEB7D831-D9D9-4815-9631-EEC476D21BD4}" '
    'From="#996016@sip.ringcentral.com:5060" To="17206666666*115" Cmd="6"/>'
    '<Bdy SrvLvl="-149699523" SrvLvlExt="406" Phn="+16506666666" Nm="WIRELESS CALLER" '
    'ToPhn="+16504223279" ToNm="Tyler Liu" RecUrl=""/></Msg>'
)
ALREADY_PROCESSED = (
    '<Msg><Hdr SID="35464243582848" Req="" From="#1024016@sip.ringcentral.com:5060" '
    'To="17206666666*115@sip.ringcentral.com:5060" Cmd="7"/>'
    '<Bdy Cln="802398808016" IP="4294967295" Sts="0" CtrlCln=""/></Msg>'
)
AUTH_ID = "802398808016"
ECHO_HDR = (
    '<Hdr SID="35464233129848" Req="{EEB7D831-D9D9-4815-9631-EEC476D21BD4}" '
    'From="17206666666*115" To="#996016@sip.ringcentral.com:5060" Cmd="{cmd}"/>'
)


def expected(cmd: int, body: str = "") -> str:
    return f'<Msg>{ECHO_HDR.replace("{cmd}", str(cmd))}<Bdy Cln="{AUTH_ID}"{body}/></Msg>'


@pytest.fixture
def p_rc() -> RcMessage:
    return rc.parse_rc_message(P_RC)


# -- parsing ---------------------------------------------------------------------------------


def test_parse_p_rc(p_rc: RcMessage) -> None:
    assert p_rc.cmd == RcCommand.INCOMING_CALL
    assert p_rc.sid == "35464233129848"
    assert p_rc.headers["From"] == "#996016@sip.ringcentral.com:5060"
    assert p_rc.body["Phn"] == "+16506666666"
    assert p_rc.body["Nm"] == "WIRELESS CALLER"
    assert p_rc.body["RecUrl"] == ""
    assert p_rc.cln is None


def test_round_trip_is_exact(p_rc: RcMessage) -> None:
    assert p_rc.to_xml() == P_RC
    assert rc.parse_rc_message(ALREADY_PROCESSED).to_xml() == ALREADY_PROCESSED


def test_header_prefix_and_bytes_accepted() -> None:
    assert rc.parse_rc_message("P-rc: " + P_RC).sid == "35464233129848"
    assert rc.parse_rc_message(P_RC.encode()).sid == "35464233129848"


def test_missing_bdy_gives_empty_body() -> None:
    message = rc.parse_rc_message('<Msg><Hdr SID="1" Cmd="9"/></Msg>')
    assert message.body == {}
    assert message.cmd == 9
    assert rc.parse_rc_message('<Msg><Hdr SID="1" Cmd="9²"/></Msg>').cmd is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "malformed"),
        ("not xml", "malformed"),
        ("<Msg><Hdr SID='1'></Msg>", "malformed"),
        ("<Other><Hdr/></Other>", "root"),
        ("<Msg><Bdy/></Msg>", "no <Hdr>"),
        ('<!DOCTYPE x [<!ENTITY a "b">]><Msg><Hdr A="&a;"/></Msg>', "DOCTYPE"),
        ('<!ENTITY a SYSTEM "file:///etc/passwd">', "DOCTYPE"),
        ("<Msg><Hdr A='" + "x" * 20000 + "'/></Msg>", "too large"),
        (b"\xff\xfe<Msg/>", "UTF-8"),
    ],
)
def test_bad_xml_is_a_clear_error(text: str | bytes, why: str) -> None:
    with pytest.raises(RcMessageError, match=why):
        rc.parse_rc_message(text)


def test_billion_laughs_refused() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        '<Msg><Hdr A="&lol2;"/></Msg>'
    )
    with pytest.raises(RcMessageError):
        rc.parse_rc_message(bomb)


def test_error_is_a_sip_parse_error() -> None:
    assert issubclass(RcMessageError, SipParseError)


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_parse_never_crashes(data: str | bytes) -> None:
    with contextlib.suppress(RcMessageError):
        rc.parse_rc_message(data)


@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,8}", fullmatch=True),
        st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=20),
        max_size=5,
    )
)
def test_attribute_values_round_trip(attrs: dict[str, str]) -> None:
    message = RcMessage({"SID": "1", "Cmd": "14"}, attrs)
    assert rc.parse_rc_message(message.to_xml()) == message


# -- building --------------------------------------------------------------------------------


def test_confirm_receive_echo_rules(p_rc: RcMessage) -> None:
    out = rc.confirm_receive(p_rc, AUTH_ID)
    assert out.to_xml() == expected(17)
    assert rc.request_uri(out) == "sip:#996016@sip.ringcentral.com:5060"


@pytest.mark.parametrize(
    ("build", "cmd"),
    [(rc.decline, 12), (rc.to_voicemail, 11), (rc.start_reply, 13), (rc.confirm_receive, 17)],
)
def test_simple_commands(p_rc: RcMessage, build: object, cmd: int) -> None:
    assert build(p_rc, AUTH_ID).to_xml() == expected(cmd)  # type: ignore[operator]


def test_forward(p_rc: RcMessage) -> None:
    out = rc.forward(p_rc, AUTH_ID, "+16501234567")
    assert out.to_xml() == expected(10, ' FwdDly="0" Phn="+16501234567" PhnTp="3"')
    with pytest.raises(CallError):
        rc.forward(p_rc, AUTH_ID, "")


def test_reply_text_is_escaped(p_rc: RcMessage) -> None:
    out = rc.reply(p_rc, AUTH_ID, 'Busy <5 min> & "back"')
    assert out.to_xml() == expected(
        14, ' RepTp="0" Bdy="Busy &lt;5 min&gt; &amp; &quot;back&quot;"'
    )
    assert rc.parse_rc_message(out.to_xml()).body["Bdy"] == 'Busy <5 min> & "back"'


def test_missing_req_is_left_out() -> None:
    out = rc.confirm_receive(RcMessage({"SID": "1", "From": "a", "To": "b"}, {}), "id")
    assert out.to_xml() == '<Msg><Hdr SID="1" From="b" To="a" Cmd="17"/><Bdy Cln="id"/></Msg>'


# The upstream inbound-reply-options spec, case for case.
REPLY_CASES: list[tuple[object, dict[str, str]]] = [
    ("Custom reply", {"Cln": "id", "RepTp": "0", "Bdy": "Custom reply"}),
    (
        {"type": "callYouBack", "direction": "toCaller", "delay": 4, "unit": "days"},
        {"Cln": "id", "RepTp": "1", "Dir": "0", "Vl": "4", "Units": "2"},
    ),
    ({"type": "onMyWay"}, {"Cln": "id", "RepTp": "2"}),
    ({"type": "onOtherLine"}, {"Cln": "id", "RepTp": "3"}),
    (
        {"type": "callYouBackLater", "direction": "fromCaller"},
        {"Cln": "id", "RepTp": "4", "Dir": "1"},
    ),
    ({"type": "inAMeeting"}, {"Cln": "id", "RepTp": "5"}),
    ({"type": "onOtherLineNoCall"}, {"Cln": "id", "RepTp": "6"}),
    (
        ReplyOptions("call_you_back", direction="from_caller", delay=30, unit="minutes"),
        {"Cln": "id", "RepTp": "1", "Dir": "1", "Vl": "30", "Units": "0"},
    ),
]


@pytest.mark.parametrize(("options", "body"), REPLY_CASES)
def test_reply_options_map_to_wire_fields(options: object, body: dict[str, str]) -> None:
    p_rc = RcMessage({"SID": "sid", "Req": "req", "From": "101", "To": "100"}, {})
    out = rc.reply(p_rc, "id", options)  # type: ignore[arg-type]
    assert out.body == body
    assert list(out.body) == list(body)  # attribute order too
    assert out.headers == {"SID": "sid", "Req": "req", "From": "100", "To": "101", "Cmd": "14"}


def test_reply_options_dataclass_hours() -> None:
    assert rc.reply_body(ReplyOptions("callYouBack", "toCaller", 2, "hours")) == {
        "RepTp": "1",
        "Dir": "0",
        "Vl": "2",
        "Units": "1",
    }


@pytest.mark.parametrize(
    "options",
    [
        {"type": "unknown"},
        {"type": "callYouBack"},
        {"type": "callYouBack", "direction": "sideways", "delay": 4, "unit": "days"},
        {"type": "callYouBack", "direction": "toCaller", "delay": 4, "unit": "weeks"},
        {"type": "callYouBack", "direction": "toCaller", "delay": -1, "unit": "days"},
        {"type": "callYouBack", "direction": "toCaller", "delay": "4", "unit": "days"},
        {"type": "callYouBack", "direction": "toCaller", "delay": True, "unit": "days"},
        {"type": "callYouBackLater"},
        {"type": "onMyWay", "delay": 4, "unit": "days"},
        {"type": "onMyWay", "colour": "red"},
        {},
        "",
        "bell\x07",
        42,
    ],
)
def test_invalid_reply_options_rejected(options: object) -> None:
    with pytest.raises(InvalidReplyOptionsError, match="Invalid reply options"):
        rc.reply(RcMessage({"SID": "s"}, {}), "id", options)  # type: ignore[arg-type]
    assert issubclass(InvalidReplyOptionsError, CallError)


# -- server messages -------------------------------------------------------------------------


def test_cln_filter_and_already_processed() -> None:
    message = rc.parse_rc_message(ALREADY_PROCESSED)
    assert rc.is_already_processed(message)
    assert not rc.is_server_free_resources(message)
    assert rc.is_for_client(message, AUTH_ID)
    assert not rc.is_for_client(message, "someone-else")
    assert rc.is_for_client(RcMessage({"Cmd": "2"}, {}), "anyone")
    assert rc.is_server_free_resources(RcMessage({"Cmd": "2"}, {}))


def test_session_close() -> None:
    urgent = rc.parse_rc_message(
        '<Msg><Hdr SID="35464233129848" Req="" From="a" To="b" Cmd="9"/>'
        '<Bdy Cln="id" Sts="0" Resp="3" ExtNfo="16501112222" Phn="+16506666666" '
        'Nm="WIRELESS CALLER"/></Msg>'
    )
    close = rc.parse_session_close(urgent)
    assert close is not None
    assert close.responded
    assert close.sid == "35464233129848"
    assert close.response == "urgent"
    assert close.callback_number == "16501112222"
    assert close.phone == "+16506666666"
    assert close.name == "WIRELESS CALLER"
    yes = rc.parse_session_close(RcMessage({"SID": "1", "Cmd": "9"}, {"Sts": "0", "Resp": "1"}))
    assert yes is not None and yes.response == "yes" and yes.callback_number is None
    other = rc.parse_session_close(RcMessage({"Cmd": "9"}, {"Sts": "complete", "Resp": "7"}))
    assert other is not None and not other.responded and other.response == "7"
    assert rc.parse_session_close(rc.parse_rc_message(ALREADY_PROCESSED)) is None


def test_cmd_not_a_number() -> None:
    assert RcMessage({"Cmd": "x"}, {}).cmd is None
    assert RcMessage({}, {}).cmd is None


# -- INFO JSON -------------------------------------------------------------------------------


def test_build_info_commands() -> None:
    assert rc.build_info_command("startcallrecord", 1) == (
        b'{"request":{"reqid":1,"command":"startcallrecord"}}'
    )
    assert rc.build_info_command("stop_recording", 2) == (
        b'{"request":{"reqid":2,"command":"stopcallrecord"}}'
    )
    assert rc.build_info_command("flip", 3, target="16501234567") == (
        b'{"request":{"reqid":3,"command":"callflip","target":"16501234567"}}'
    )
    assert rc.build_info_command("park", 4) == b'{"request":{"reqid":4,"command":"callpark"}}'
    with pytest.raises(CallError):
        rc.build_info_command("explode", 1)
    with pytest.raises(CallError):
        rc.build_info_command("park", -1)


def test_parse_info_results() -> None:
    park = rc.parse_info_result(
        '{"response":{"reqid":4,"command":"callpark","result":'
        '{"code":0,"description":"Succeeded","park extension":"813"}}}'
    )
    assert park is not None
    assert (park.reqid, park.command, park.code, park.description) == (
        4,
        "callpark",
        0,
        "Succeeded",
    )
    assert park.extra == {"park extension": "813"}
    assert park.ok
    flip = rc.parse_info_result(
        b'{"response":{"reqid":3,"command":"callflip","result":{"code":0,'
        b'"description":"Succeeded","number":"+16501234567","target":"16501234567"}}}'
    )
    assert flip is not None and flip.extra == {"number": "+16501234567", "target": "16501234567"}
    failed = rc.parse_info_result('{"response":{"reqid":1,"command":"startcallrecord"}}')
    assert failed is not None and failed.code is None and not failed.ok


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "[]",
        '{"request":{"reqid":1,"command":"callpark"}}',
        '{"response":{"reqid":"1","command":"callpark"}}',
        '{"response":{"reqid":true,"command":"callpark"}}',
        '{"response":{"reqid":1}}',
        b"\xff",
        "a=candidate:1 1 UDP 1 127.0.0.1 9 typ host",
    ],
)
def test_non_results_are_none(body: str | bytes) -> None:
    assert rc.parse_info_result(body) is None


@given(st.integers(0, 2**31), st.sampled_from(sorted(rc.INFO_COMMANDS)))
def test_info_round_trip(reqid: int, command: str) -> None:
    request = json.loads(rc.build_info_command(command, reqid))["request"]
    response = json.dumps({"response": {**request, "result": {"code": 0, "description": "ok"}}})
    result = rc.parse_info_result(response)
    assert result is not None
    assert (result.reqid, result.command) == (reqid, rc.INFO_COMMANDS[command])


# -- headers ---------------------------------------------------------------------------------


def test_rc_api_ids() -> None:
    ids = rc.parse_rc_api_ids(
        "party-id=p-33f727da499c463aac3cf8294de576c0-2;session-id=s-33f727da499c463aac3cf8294de576c0"
    )
    assert ids.party_id == "p-33f727da499c463aac3cf8294de576c0-2"
    assert ids.session_id == "s-33f727da499c463aac3cf8294de576c0"
    swapped = rc.parse_rc_api_ids("Session-Id=s-1 ; Party-Id=p-a0dz-12")
    assert swapped == rc.RcApiIds("p-a0dz-12", "s-1")
    assert rc.parse_rc_api_ids(None) == rc.RcApiIds(None, None)
    assert rc.parse_rc_api_ids("garbage") == rc.RcApiIds(None, None)


def test_rc_api_call_info() -> None:
    info = rc.parse_rc_api_call_info(
        "callAttributes=queue-call,reject;callerIdName=WIRELESS CALLER;queueName=Tyler's q=1"
    )
    assert info == {
        "callAttributes": "queue-call,reject",
        "callerIdName": "WIRELESS CALLER",
        "queueName": "Tyler's q=1",
    }
    assert rc.parse_rc_api_call_info(None) == {}


@pytest.mark.parametrize(
    ("alert", "call_info", "delay"),
    [
        ("Auto Answer", "<201625796_120575908@10.22.66.84>;purpose=info;Answer-After=0", 0.0),
        ("auto  answer", "<x>;purpose=info;answer-after=3", 3.0),
        ("AUTO ANSWER", None, 0.0),
        (["Something", "Auto Answer"], ["<a>;purpose=info", "<b>;Answer-After=5"], 5.0),
        ("<http://www.notused.com>;info=alert-autoanswer", "<x>;answer-after=2", 2.0),
        (None, "<x>;Answer-After=0", None),
        ("Ring", "<x>;Answer-After=0", None),
        ("Auto Answering machine", None, None),
    ],
)
def test_auto_answer(alert: object, call_info: object, delay: float | None) -> None:
    assert rc.auto_answer_delay(alert, call_info) == delay  # type: ignore[arg-type]
