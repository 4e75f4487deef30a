"""Sandbox pure helpers: proxy message surgery, the RC server side, dialog CSeq shifting, users."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webphone.sandbox.connection import TxFailure
from webphone.sandbox.dialogs import Dialog, Leg
from webphone.sandbox.messages import (
    ack_for,
    answer_unanswered,
    cancel_for,
    forwarded,
    pop_via,
    relayed,
    response_to,
    salvage_response,
    uri_user,
)
from webphone.sandbox.rc import Identity, RcCall, info_result, parse_info_request, server_message
from webphone.sandbox.users import UserTable, generate_users, load_users, users_from_data
from webphone.sip import Headers, SipRequest, parse_message
from webphone.sip.rc import RcCommand, parse_rc_api_ids, parse_rc_message

INVITE = (
    "INVITE sip:102@sip.test SIP/2.0\r\n"
    "Via: SIP/2.0/WS a.invalid;branch=z9hG4bKaaa\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:102@sip.test>\r\n"
    "From: <sip:101@sip.test>;tag=ft\r\n"
    "Call-ID: cid\r\n"
    "CSeq: 7 INVITE\r\n"
    "Route: <sip:sandbox;lr>\r\n"
    "Proxy-Authorization: Digest x\r\n"
    "Content-Type: application/sdp\r\n"
    "\r\nv=0\r\n"
)


def invite() -> SipRequest:
    message = parse_message(INVITE)
    assert isinstance(message, SipRequest)
    return message


def test_forwarded_pushes_via_and_record_route_and_drops_credentials() -> None:
    out = forwarded(invite(), "sip:dev@b.invalid", "SIP/2.0/WS sb;branch=z9hG4bKsb",
                    record_route="<sip:sb;lr>", add=[("P-rc", "<Msg/>")])
    assert out.uri == "sip:dev@b.invalid"
    # devices see ONE Via, ours (RingCentral's edge does; the official SDK keeps only the last
    # of repeated headers, so it would answer with the caller's branch)
    assert out.headers.get_all("Via") == ["SIP/2.0/WS sb;branch=z9hG4bKsb"]
    assert out.headers["Record-Route"] == "<sip:sb;lr>"
    assert out.headers["Max-Forwards"] == "69"
    assert "Proxy-Authorization" not in out.headers and "Route" not in out.headers
    assert out.headers["P-rc"] == "<Msg/>" and out.body == b"v=0\r\n"
    assert "Via: SIP/2.0/WS a.invalid" in str(invite())  # input untouched


def test_relayed_gives_the_response_the_vias_of_the_request_it_answers() -> None:
    out = forwarded(invite(), "sip:d@x", "SIP/2.0/WS sb;branch=z9hG4bKsb")
    ringing = response_to(out, 180, "Ringing", to_tag="tt")
    back = relayed(ringing, invite())
    assert back is not None and back.headers.get_all("Via") == [
        "SIP/2.0/WS a.invalid;branch=z9hG4bKaaa"]
    assert back.to_tag == "tt" and back.status_code == 180 and ringing.branch == "z9hG4bKsb"
    assert str(back).index("Via:") < str(back).index("From:")  # where the Vias were
    assert relayed(ringing, SipRequest("BYE", "sip:x", Headers([]))) is None


def test_pop_via_removes_ours_even_when_comma_joined() -> None:
    ours = "Via: SIP/2.0/WS sb;branch=z9hG4bKsb\r\n"
    pushed = parse_message(INVITE.replace("Via: ", ours + "Via: ", 1))
    assert isinstance(pushed, SipRequest)
    response = response_to(pushed, 180, "Ringing", to_tag="tt")
    back = pop_via(response)
    assert back is not None
    assert back.headers.get_all("Via") == ["SIP/2.0/WS a.invalid;branch=z9hG4bKaaa"]
    joined = response.copy()
    joined.headers.set("Via", ", ".join(response.headers.get_all("Via")))
    back = pop_via(joined)
    assert back is not None and back.branch == "z9hG4bKaaa"
    only_ours = response_to(invite(), 200, "OK")
    assert pop_via(only_ours) is None


def test_response_to_adds_a_tag_once_and_copies_the_keys() -> None:
    response = response_to(invite(), 486, "Busy Here", to_tag="x")
    assert response.to_tag == "x" and response.call_id == "cid" and str(response.cseq) == "7 INVITE"
    again = response_to(parse_message(str(response).replace("SIP/2.0 486 Busy Here",
                        "BYE sip:x SIP/2.0", 1)), 200, "OK", to_tag="y")  # type: ignore[arg-type]
    assert again.to_tag == "x"
    assert response_to(invite(), 100, "Trying", to_tag="z").to_tag is None


def test_cancel_and_ack_of_a_forwarded_invite() -> None:
    out = forwarded(invite(), "sip:dev@b.invalid", "SIP/2.0/WS sb;branch=z9hG4bKsb")
    cancel = cancel_for(out, 'SIP;cause=200;text="Call completed elsewhere"')
    assert cancel.method == "CANCEL" and cancel.uri == out.uri
    assert cancel.branch == "z9hG4bKsb" and str(cancel.cseq) == "7 CANCEL"
    assert cancel.headers["Reason"].startswith("SIP;cause=200")
    busy = response_to(out, 486, "Busy Here", to_tag="t")
    ack = ack_for(out, busy)
    assert ack.branch == "z9hG4bKsb" and ack.to_tag == "t" and str(ack.cseq) == "7 ACK"


def test_salvage_answers_broken_requests_when_it_can() -> None:
    broken = "INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/WS h;branch=z9hG4bKq\r\nCSeq: oops\r\n" \
             "Content-Length: 999\r\n\r\n"
    response = salvage_response(broken, 400, "Bad Request - bad\r\nthing")
    assert response is not None and response.status_code == 400
    assert response.reason == "Bad Request - bad thing"
    assert response.headers["Via"] == "SIP/2.0/WS h;branch=z9hG4bKq"
    assert salvage_response("ACK sip:x SIP/2.0\r\nVia: SIP/2.0/WS h\r\n\r\n", 400, "x") is None
    assert salvage_response("garbage", 400, "x") is None
    assert salvage_response("OPTIONS sip:x SIP/2.0\r\nTo: <sip:x>\r\n\r\n", 400, "x") is None


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_salvage_never_raises(text: str) -> None:
    salvage_response(text, 400, "Bad Request")


def test_uri_user() -> None:
    assert uri_user("sip:101@sip.test;transport=ws") == "101"
    assert uri_user("sip:%23123@sip.test") == "#123"
    assert uri_user("sip:sip.test") is None and uri_user("not a uri") is None


def test_p_rc_and_server_messages_parse_with_the_phone_parser() -> None:
    call = RcCall.new("sip.test")
    caller = Identity("101", 'Al "the" <caller>', "+16505550101")
    callee = Identity("102", "Bob", "+16505550102")
    headers = dict(call.headers(caller, callee))
    p_rc = parse_rc_message(headers["P-rc"])
    assert p_rc.headers == {"SID": call.sid, "Req": call.req, "From": call.agent, "To": "102",
                            "Cmd": "6"}
    assert p_rc.body["Nm"] == 'Al "the" <caller>' and p_rc.body["ToPhn"] == "+16505550102"
    ids = parse_rc_api_ids(headers["p-rc-api-ids"])
    assert ids.party_id == call.party_id and ids.session_id == call.session_id
    assert call.agent.startswith("#") and call.agent.endswith("@sip.test:5060")
    body = server_message(call, RcCommand.ALREADY_PROCESSED, to_user="102", domain="sip.test",
                          cln="102")
    message = parse_rc_message(body)
    assert message.cmd == 7 and message.cln == "102" and message.sid == call.sid
    assert message.headers["To"] == "102@sip.test:5060" and message.body["Sts"] == "0"


def test_info_requests_and_results() -> None:
    request = parse_info_request(b'{"request":{"reqid":3,"command":"callflip","target":"103"}}')
    assert request is not None and request.args == {"target": "103"}
    result = json.loads(info_result(request, {"code": 0}))
    assert result == {"response": {"reqid": 3, "command": "callflip", "result": {"code": 0}}}
    for body in (b"", b"not json", b"[]", b'{"response":{}}', b'{"request":{"command":1}}'):
        assert parse_info_request(body) is None


def test_dialog_requests_keep_each_cseq_space_increasing() -> None:
    caller = Leg(1, "ft", "<sip:101@d>;tag=ft", "sip:a@x", cseq=10)
    callee = Leg(2, "tt", "<sip:102@d>;tag=tt", "sip:b@y")
    dialog = Dialog("cid", caller, callee)
    info = dialog.request_to(caller, "INFO", via_host="sb")  # in the callee's name
    assert info.headers["From"] == callee.header and info.headers["To"] == caller.header
    assert info.uri == "sip:a@x" and info.cseq.number == 1
    assert callee.shift(1) == 2  # the callee's own next request is shifted past it
    assert dialog.request_to(caller, "INFO", via_host="sb").cseq.number == 3
    assert callee.shift(2) == 4 and caller.shift(11) == 11


def test_users_from_files_and_data(tmp_path: Path) -> None:
    toml = tmp_path / "users.toml"
    toml.write_text('[[users]]\nextension = "201"\npassword = "x"\nname = "Ann"\n')
    [ann] = load_users(toml)
    assert (ann.extension, ann.name, ann.authorization_id, ann.phone_number) == (
        "201", "Ann", "201", "+16505550201")
    as_json = tmp_path / "users.json"
    as_json.write_text(json.dumps({"users": [{"extension": "7", "password": "p",
                                              "authorizationId": "8007"}]}))
    assert load_users(as_json)[0].authorization_id == "8007"
    assert [u.extension for u in users_from_data({"1": "a", "2": "b"})] == ["1", "2"]
    with pytest.raises(ValueError, match="unknown key"):
        users_from_data([{"extension": "1", "password": "a", "pin": "1"}])
    with pytest.raises(ValueError, match="duplicate"):
        UserTable(users_from_data({"1": "a"}) * 2)
    generated = generate_users(3)
    assert [u.extension for u in generated] == ["101", "102", "103"]
    assert len({u.password for u in generated}) == 3
    assert generated[0].password not in repr(generated[0])
    table = UserTable(generated)
    assert table.by_number("+16505550102") is table.by_number("6505550102") is table["102"]


@given(st.lists(st.sampled_from(list(TxFailure)), min_size=1, max_size=5),
       st.booleans())
def test_an_unanswered_request_gets_500_only_when_every_branch_lost_its_connection(
    failures: list[TxFailure], in_dialog: bool
) -> None:
    """RFC 3261 §16.7 step 6 with §16.8/§16.9: a lost connection is a 503 (sent upstream as
    500), a timeout a 408; the lowest class wins. In a dialog no To tag is made up."""
    request = invite()
    if in_dialog:
        request.headers.set("To", "<sip:102@sip.test>;tag=tt")
    answer = answer_unanswered(request, failures)
    closed_only = set(failures) == {TxFailure.CONNECTION_CLOSED}
    assert answer.status_code == (500 if closed_only else 408)
    assert ("Warning" in answer.headers) == closed_only
    assert answer.call_id == "cid" and answer.cseq.number == 7
    assert (answer.to_tag == "tt") if in_dialog else bool(answer.to_tag)


def test_no_failures_at_all_is_a_timeout() -> None:
    assert answer_unanswered(invite(), []).status_code == 408
