"""Transactions (RFC 3261 §17), rule builders and dialogs of the pure SIP core, without I/O."""

from __future__ import annotations

import pytest

from support.sip_pair import CALLER, make_invite, wire
from webphone.sip import SipRequest, SipResponse, parse_message
from webphone.sip.build import ack_for, cancel_for, default_reply, response_to
from webphone.sip.dialog import CSEQ_ADOPTION_GAP, Dialog, DialogState, DialogStateError
from webphone.sip.transaction import (
    TIMER_B,
    TRANSITIONS,
    ClientTransaction,
    ResponseReceived,
    Role,
    Send,
    ServerTransaction,
    TransactionState,
    TransactionStateError,
    TransactionTimeout,
    earliest,
    new_branch,
    transaction_key,
)


def reply(request: SipRequest, code: int, tag: str | None = "t1", **kw: object) -> SipResponse:
    return response_to(request, code, "X", to_tag=tag, **kw)  # type: ignore[arg-type]


def request(method: str) -> SipRequest:
    invite = make_invite()
    out = invite.copy()
    out.method = method
    out.headers.set("CSeq", f"2 {method}")
    return out


# -- client transactions --------------------------------------------------------------------


def test_invite_client_provisional_then_2xx_terminates_without_ack() -> None:
    """A 2xx leaves the INVITE client transaction at once; its ACK is the core's (§17.1.1.2)."""
    invite = make_invite()
    txn = ClientTransaction(invite, 0.0)
    assert txn.start() == [Send(message=invite)] and txn.state is TransactionState.CALLING
    out = txn.receive(reply(invite, 180), 1.0)
    assert [type(o) for o in out] == [ResponseReceived] and not out[0].final  # type: ignore[union-attr]
    assert txn.state is TransactionState.PROCEEDING and txn.next_deadline() is None
    out = txn.receive(reply(invite, 200), 2.0)
    assert txn.terminated and [type(o) for o in out] == [ResponseReceived]
    assert txn.receive(reply(invite, 200), 3.0) == []  # later 2xx: not the transaction's


def test_invite_client_failure_is_acked_once_and_terminates() -> None:
    """A 486 is ACKed with the INVITE's branch and the response's To tag (§17.1.1.3); Timer D=0."""
    invite = make_invite()
    txn = ClientTransaction(invite, 0.0)
    out = txn.receive(reply(invite, 486), 0.1)
    ack = out[0].message  # type: ignore[union-attr]
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    assert ack.branch == invite.branch and ack.to_tag == "t1" and str(ack.cseq) == "1 ACK"
    assert txn.terminated and txn.next_deadline() is None


def test_invite_client_timer_b_fires_only_before_a_response() -> None:
    """Timer B bounds the wait for the first response; Proceeding waits without bound."""
    invite = make_invite()
    txn = ClientTransaction(invite, 10.0)
    assert txn.next_deadline() == 10.0 + TIMER_B
    assert txn.handle_timeout(10.0 + TIMER_B - 0.1) == []
    out = txn.handle_timeout(10.0 + TIMER_B)
    assert out == [TransactionTimeout(key=txn.key, method="INVITE", timer="B")]
    assert txn.terminated and txn.handle_timeout(100.0) == []


def test_non_invite_client_timer_f_and_final_timeout() -> None:
    """Timer F fires in Trying; after a 1xx the `final_timeout` bound applies."""
    bye = request("BYE")
    txn = ClientTransaction(bye, 0.0, timeout=5.0, final_timeout=30.0)
    assert txn.role is Role.CLIENT and txn.state is TransactionState.TRYING
    txn.receive(reply(bye, 100), 1.0)
    assert txn.next_deadline() == 31.0 and txn.answered
    assert txn.handle_timeout(31.0)[0].timer == "F"  # type: ignore[union-attr]


def test_non_invite_client_final_then_retransmission_absorbed() -> None:
    """Timer K = 0: the transaction ends at the final response; a duplicate is absorbed."""
    bye = request("BYE")
    txn = ClientTransaction(bye, 0.0)
    assert len(txn.receive(reply(bye, 200), 0.1)) == 1 and txn.terminated
    assert txn.receive(reply(bye, 200), 0.2) == []


def test_no_timeout_means_no_deadline() -> None:
    """timeout=None: the shell waits without a Timer B."""
    txn = ClientTransaction(make_invite(), 0.0, timeout=None)
    assert txn.next_deadline() is None and txn.handle_timeout(1e9) == []


def test_completed_invite_client_reacks_a_retransmitted_final() -> None:
    """With Timer D > 0 (unreliable transports) a repeated final in Completed is ACKed again."""
    invite = make_invite()
    txn = ClientTransaction(invite, 0.0)
    txn.state = TransactionState.COMPLETED
    out = txn.receive(reply(invite, 486), 0.0)
    assert [m.message.method for m in out] == ["ACK"]  # type: ignore[union-attr]


def test_illegal_transition_names_event_role_and_state() -> None:
    """An event the state does not accept raises, naming all three."""
    txn = ServerTransaction(request("INFO"), 0.0)
    txn.respond(reply(txn.request, 200), 0.0)
    with pytest.raises(TransactionStateError, match=r"'2xx'.*non-invite-server.*terminated"):
        txn.respond(reply(txn.request, 200), 0.0)


# -- server transactions --------------------------------------------------------------------


def test_invite_server_answers_retransmissions_with_last_response() -> None:
    """A repeated INVITE gets the last provisional again (§17.2.1)."""
    invite = make_invite()
    txn = ServerTransaction(invite, 0.0)
    assert txn.receive(invite, 0.0) == []  # nothing sent yet
    ringing = reply(invite, 180)
    assert txn.respond(ringing, 0.0) == [Send(message=ringing)]
    assert txn.receive(invite, 0.5) == [Send(message=ringing)]


def test_invite_server_failure_waits_for_ack_then_timer_h() -> None:
    """After a 486 the transaction waits Timer H for the ACK; without one it times out."""
    invite = make_invite()
    txn = ServerTransaction(invite, 0.0)
    busy = reply(invite, 486)
    txn.respond(busy, 1.0)
    assert txn.state is TransactionState.COMPLETED and txn.next_deadline() == 1.0 + TIMER_B
    assert txn.receive(invite, 2.0) == [Send(message=busy)]
    assert txn.handle_timeout(2.0) == []
    out = txn.handle_timeout(1.0 + TIMER_B)
    assert out == [TransactionTimeout(key=txn.key, method="INVITE", timer="H")] and txn.terminated


def test_invite_server_ack_confirms_then_terminates() -> None:
    """The ACK of our non-2xx moves Completed -> Confirmed -> Terminated (Timer I = 0)."""
    invite = make_invite()
    txn = ServerTransaction(invite, 0.0)
    response = reply(invite, 603)
    txn.respond(response, 0.0)
    ack = ack_for(invite, response)
    assert transaction_key(ack) == txn.key
    assert txn.receive(ack, 0.1) == [] and txn.terminated
    assert txn.receive(ack, 0.2) == [] and txn.handle_timeout(99.0) == []


def test_invite_server_2xx_terminates_at_once() -> None:
    """The 2xx leaves the server transaction (§17.2.1); the core retransmits it."""
    invite = make_invite()
    txn = ServerTransaction(invite, 0.0)
    txn.respond(reply(invite, 200), 0.0)
    assert txn.terminated and txn.receive(invite, 1.0) == []


def test_non_invite_server_proceeding_then_final() -> None:
    """1xx then final; Timer J = 0 ends it."""
    info = request("INFO")
    txn = ServerTransaction(info, 0.0)
    trying = reply(info, 100)
    txn.respond(trying, 0.0)
    assert txn.state is TransactionState.PROCEEDING
    assert txn.receive(info, 0.1) == [Send(message=trying)]
    txn.respond(reply(info, 200), 0.2)
    assert txn.terminated


def test_transition_table_covers_every_live_state() -> None:
    """Every non-terminated state reachable by a role has an entry in the table."""
    for (role, state), moves in TRANSITIONS.items():
        assert isinstance(role, Role) and state is not TransactionState.TERMINATED
        assert moves


def test_earliest_ignores_none() -> None:
    """The earliest deadline of several, None when there is none."""
    assert earliest([None, 3.0, 1.0]) == 1.0 and earliest([None]) is None


# -- builders -------------------------------------------------------------------------------


def test_cancel_copies_the_invite_rules() -> None:
    """CANCEL: same URI, top Via, From, To, Call-ID, CSeq number, Routes (§9.1)."""
    invite = make_invite(headers=[("Route", "<sip:p1;lr>")])
    cancel = cancel_for(invite, reason="SIP;cause=487")
    assert cancel.uri == invite.uri and cancel.branch == invite.branch
    assert str(cancel.cseq) == "1 CANCEL" and cancel.headers.get_all("Route") == ["<sip:p1;lr>"]
    assert cancel.headers["Reason"] == "SIP;cause=487"
    assert transaction_key(cancel) == (invite.branch, "CANCEL")
    assert wire(cancel) == wire(wire(cancel))


def test_response_copies_and_adds_contact_for_dialog_forming() -> None:
    """Vias, From, To+tag, Call-ID, CSeq copied; Record-Route and Contact on a 1xx/2xx to INVITE."""
    invite = make_invite(headers=[("Record-Route", "<sip:rr;lr>")])
    ok = response_to(invite, 200, "OK", to_tag="x", contact=CALLER.contact,
                     body=b"v=0\r\n", content_type="application/sdp")
    assert ok.to_tag == "x" and ok.headers["Contact"] == CALLER.contact
    assert ok.headers.get_all("Record-Route") == ["<sip:rr;lr>"]
    trying = response_to(invite, 100, "Trying", to_tag="x", contact=CALLER.contact)
    assert trying.to_tag is None and "Contact" not in trying.headers
    tagged = response_to(ok_request_with_tag(), 200, "OK", to_tag="new")
    assert tagged.to_tag == "old"


def ok_request_with_tag() -> SipRequest:
    info = request("INFO")
    info.headers.set("To", "<sip:b@example.com>;tag=old")
    return info


def test_response_to_request_missing_headers_writes_them_empty() -> None:
    """A request without From still gets an answer (a 400 must be possible)."""
    bad = SipRequest("OPTIONS", "sip:x")
    bad.headers.add("Via", f"{CALLER.via};branch={new_branch()}")
    response = response_to(bad, 400, "Bad Request")
    assert response.headers["From"] == "" and response.headers["CSeq"] == ""


@pytest.mark.parametrize(
    ("method", "to_tag", "expected"),
    [
        ("ACK", None, None),
        ("OPTIONS", None, 200),
        ("OPTIONS", "x", 200),
        ("MESSAGE", None, 200),
        ("NOTIFY", "x", 200),
        ("INVITE", None, 480),
        ("INVITE", "x", 481),
        ("BYE", None, 481),
        ("BYE", "x", 481),
        ("CANCEL", None, 481),
        ("INFO", None, 481),
        ("REFER", "x", 481),
    ],
)
def test_default_reply_table(method: str, to_tag: str | None, expected: int | None) -> None:
    """The one table for requests nobody owns (481 §12.2.2 / §9.2 / §15.1.2, 480 new INVITE)."""
    req = request(method)
    if to_tag:
        req.headers.set("To", f"<sip:b@example.com>;tag={to_tag}")
    result = default_reply(req)
    assert (None if result is None else result[0]) == expected


def test_default_reply_with_unreadable_to() -> None:
    """An unreadable To with a tag still gets 481, without raising."""
    req = request("INFO")
    req.headers.set("To", "<<;tag=zz")
    assert default_reply(req) == (481, "Call/Transaction Does Not Exist")
    req.headers.set("To", "<<")
    assert default_reply(req) == (481, "Call/Transaction Does Not Exist")


# -- dialogs --------------------------------------------------------------------------------


def uac_dialog() -> tuple[SipRequest, Dialog]:
    invite = make_invite()
    ok = response_to(invite, 200, "OK", to_tag="remote", contact="<sip:b@10.0.0.2>")
    ok.headers.add("Record-Route", "<sip:p1;lr>")
    ok.headers.add("Record-Route", "<sip:p2;lr>")
    return invite, Dialog.from_uac(invite, parse_message(bytes(ok)))  # type: ignore[arg-type]


def test_uac_dialog_reverses_route_set_and_targets_contact() -> None:
    """§12.1.2: route set reversed, remote target from Contact, confirmed by the 2xx."""
    _invite, dialog = uac_dialog()
    assert dialog.route_set == ["<sip:p2;lr>", "<sip:p1;lr>"]
    assert dialog.remote_target == "sip:b@10.0.0.2" and dialog.state is DialogState.CONFIRMED
    uri, fields = dialog.request_fields("BYE")
    assert uri == "sip:b@10.0.0.2" and ("CSeq", "2 BYE") in fields
    assert ("Route", "<sip:p2;lr>") in fields


def test_dialog_without_to_tag_is_refused() -> None:
    """A response without a To tag cannot create a dialog."""
    invite = make_invite()
    with pytest.raises(ValueError, match="no To tag"):
        Dialog.from_uac(invite, response_to(invite, 180, "Ringing"))


def test_dialog_cseq_order_and_target_refresh() -> None:
    """§12.2.2: lower CSeq refused, ACK/CANCEL always pass; refresh takes the new Contact."""
    invite = make_invite()
    dialog = Dialog.from_uas(invite, "local", "<sip:me@x>")
    later = request("INFO")
    assert not dialog.accepts(make_invite(cseq=1))
    assert dialog.accepts(later) and not dialog.accepts(later)
    ack = request("ACK")
    assert dialog.accepts(ack)
    refresh = request("INVITE")
    refresh.headers.set("Contact", "<sip:moved@10.9.9.9>")
    dialog.refresh_target(refresh)
    assert dialog.remote_target == "sip:moved@10.9.9.9"
    refresh.headers.set("Contact", "*")
    dialog.refresh_target(refresh)
    assert dialog.remote_target == "sip:moved@10.9.9.9"
    refresh.headers.set("Contact", "<<bad")
    dialog.refresh_target(refresh)
    assert dialog.remote_target == "sip:moved@10.9.9.9"


def test_dialog_update_from_response_and_matching() -> None:
    """A 2xx may replace route set and target; matches() checks Call-ID and both tags."""
    invite, dialog = uac_dialog()
    ok = response_to(invite, 200, "OK", to_tag="remote", contact="<sip:b@10.0.0.3>")
    ok.headers.add("Record-Route", "<sip:p3;lr>")
    dialog.update_from_response(ok)
    assert dialog.route_set == ["<sip:p3;lr>"] and dialog.remote_target == "sip:b@10.0.0.3"
    assert dialog.matches(ok)
    other = ok.copy()
    other.headers.set("Call-ID", "other")
    assert not dialog.matches(other)
    bye = SipRequest("BYE", "sip:x")
    for name, value in (("Call-ID", invite.call_id), ("From", "<sip:b@x>;tag=remote"),
                        ("To", f"<sip:a@x>;tag={invite.from_tag}")):
        bye.headers.add(name, value)
    assert dialog.matches(bye)


def test_dialog_state_machine() -> None:
    """early -> confirmed -> terminated; a 2xx cannot revive a terminated dialog."""
    dialog = Dialog.from_uas(make_invite(), "l")
    assert dialog.state is DialogState.EARLY and not dialog.confirmed
    dialog.confirm()
    assert dialog.confirmed
    dialog.terminate()
    dialog.terminate()
    with pytest.raises(DialogStateError, match="'2xx' not allowed in state terminated"):
        dialog.confirm()


def test_dialog_round_trip_and_adoption() -> None:
    """to_dict is plain JSON and versioned; from_dict restores it; adopt moves the CSeq on."""
    import json

    _, dialog = uac_dialog()
    dialog.local_contact = CALLER.contact
    dialog.remote_cseq = 7
    data = json.loads(json.dumps(dialog.to_dict()))
    again = Dialog.from_dict(data)
    assert again == dialog
    again.adopt()
    assert again.local_cseq == dialog.local_cseq + CSEQ_ADOPTION_GAP
    assert again.next_cseq() == dialog.local_cseq + CSEQ_ADOPTION_GAP + 1
    with pytest.raises(ValueError, match="at least 1"):
        again.adopt(0)
    again.local_cseq = 2**31 - 10
    with pytest.raises(DialogStateError, match="2\\*\\*31"):
        again.adopt()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "dialog.version is 2"),
        ({"call_id": 5}, "dialog.call_id must be str"),
        ({"route_set": "x"}, "dialog.route_set must be list"),
        ({"route_set": [1]}, "list of strings"),
        ({"local_cseq": True}, "dialog.local_cseq must be int"),
        ({"remote_cseq": "1"}, "dialog.remote_cseq must be int or null"),
        ({"state": "gone"}, "not a dialog state"),
    ],
)
def test_dialog_from_dict_names_the_bad_field(change: dict[str, object], message: str) -> None:
    """Unusable state is refused with the field's path."""
    _, dialog = uac_dialog()
    data = {**dialog.to_dict(), **change}
    with pytest.raises(DialogStateError, match=message):
        Dialog.from_dict(data)
