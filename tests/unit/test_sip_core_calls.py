"""The call state machine (RFC 3261 §12-§15) as a caller core talking to a callee core in memory."""

from __future__ import annotations

import json

import pytest

from support.sip_pair import ANSWER, CALLEE, CALLER, OFFER, Pair, events, make_invite, sends, wire
from webphone.errors import CallError, SipParseError
from webphone.sip import SipRequest, SipResponse
from webphone.sip.build import response_to
from webphone.sip.transaction import T1, T2, TIMER_B, ResponseReceived, TransactionTimeout
from webphone.sip.ua import (
    AckLost,
    AckReceived,
    AnswerNeeded,
    CallAnswered,
    CallCore,
    CallRinging,
    CallState,
    CallTerminated,
    RequestReceived,
)


def kinds(outputs: list[object]) -> list[str]:
    return [type(o).__name__ for o in outputs]


def terminated(outputs: list[object]) -> CallTerminated:
    (end,) = [o for o in outputs if isinstance(o, CallTerminated)]
    return end


# -- the basic call -------------------------------------------------------------------------


def test_call_rings_answers_and_acks() -> None:
    """INVITE, 180, 200, ACK: both answered, both dialogs confirmed, SDP kept on both sides."""
    pair = Pair().call().answered()
    assert pair.trace == ["> INVITE", "< 180", "< 200", "> ACK"]
    assert pair.uac.state is CallState.ANSWERED and pair.uas.state is CallState.ANSWERED
    assert kinds(pair.uac_events) == ["CallRinging", "CallAnswered"]
    assert kinds(pair.uas_events) == ["CallRinging", "CallAnswered", "AckReceived"]
    assert pair.uac.dialog.confirmed and pair.uas.dialog.confirmed
    assert pair.uac.remote_sdp == ANSWER and pair.uas.remote_sdp == OFFER
    assert pair.uac.local_sdp == OFFER and pair.uas.local_sdp == ANSWER
    assert pair.uac.next_deadline() is None and pair.uas.next_deadline() is None


def test_100_trying_does_not_ring() -> None:
    """A 100 keeps the call in init and creates no dialog."""
    pair = Pair().call()
    pair.on_uas(pair.uas.ring(pair.now, 100, "Trying")).flush()
    assert pair.uac.state is CallState.INIT and pair.uac.dialog is None
    assert pair.uas.state is CallState.INIT


def test_caller_hangs_up_with_bye() -> None:
    """BYE from the caller ends both sides; the BYE's 200 comes back as an event."""
    pair = Pair().call().answered()
    pair.on_uac(pair.uac.hangup(pair.now)).flush()
    assert pair.trace[-2:] == ["> BYE", "< 200"]
    assert pair.uac.state is CallState.TERMINATED and pair.uas.state is CallState.TERMINATED
    assert terminated(pair.uas_events).by_peer and terminated(pair.uac_events).reason == "hung up"
    assert isinstance(pair.uac_events[-1], ResponseReceived)


def test_callee_hangs_up_with_bye_and_uses_reversed_route() -> None:
    """BYE from the callee goes to the caller's Contact, CSeq starting at 1 in its direction."""
    pair = Pair().call().answered()
    out = pair.uas.hangup(pair.now)
    (bye,) = sends(out)
    assert bye.uri == "sip:a@caller.invalid;transport=ws" and bye.cseq.number == 1
    pair.on_uas(out).flush()
    assert terminated(pair.uac_events).by_peer


def test_bye_before_ack_ends_call_and_stops_retransmission() -> None:
    """§15.1.2: a BYE may come before the ACK; the 2xx is then no longer retransmitted."""
    pair = Pair().call()
    pair.on_uas(pair.uas.answer(pair.now, ANSWER))
    ok = pair.to_uac.pop()
    pair.uac.receive(ok, pair.now)  # caller's ACK is "lost": not delivered
    pair.to_uas.clear()
    pair.on_uac(pair.uac.hangup(pair.now)).flush()
    assert pair.uas.state is CallState.TERMINATED and pair.uas.next_deadline() is None
    assert pair.advance(TIMER_B).to_uac == []


def test_failure_response_is_acked_by_the_transaction() -> None:
    """486: the caller's transaction ACKs it and the call fails; the callee's transaction ends."""
    pair = Pair().call()
    pair.on_uas(pair.uas.reject(pair.now, 486, "Busy Here")).flush()
    assert pair.trace == ["> INVITE", "< 486", "> ACK"]
    end = terminated(pair.uac_events)
    assert end.failed and end.status == 486
    assert pair.uas.state is CallState.TERMINATED and pair.uas.next_deadline() is None


def test_reject_needs_a_failure_code() -> None:
    """reject(200) is a programming error, named as such."""
    pair = Pair().call()
    with pytest.raises(CallError, match="not a final failure"):
        pair.uas.reject(pair.now, 200, "OK")


def test_timer_b_fails_an_unanswered_invite() -> None:
    """No answer at all within 64*T1: the call fails with a timeout."""
    pair = Pair().call()
    pair.to_uas.clear()
    pair.advance(TIMER_B)
    assert terminated(pair.uac_events).failed
    assert any(isinstance(e, TransactionTimeout) and e.timer == "B" for e in pair.uac_events)


# -- CANCEL ---------------------------------------------------------------------------------


def test_cancel_after_ringing_gets_487() -> None:
    """§9: CANCEL, 200 for it, 487 for the INVITE, ACK; both sides end, not as failures."""
    pair = Pair().call()
    pair.on_uas(pair.uas.ring(pair.now)).flush()
    pair.on_uac(pair.uac.cancel(pair.now)).flush()
    assert pair.trace[-4:] == ["> CANCEL", "< 200", "< 487", "> ACK"]
    assert not terminated(pair.uac_events).failed
    assert terminated(pair.uas_events).reason == "caller cancelled"
    assert pair.uac.next_deadline() is None


def test_cancel_before_any_response_waits_for_one() -> None:
    """§9.1: no CANCEL before a provisional response; it leaves with the first one (100 too)."""
    pair = Pair().call()
    assert pair.uac.cancel(pair.now) == [] and pair.uac.cancel(pair.now) == []
    pair.on_uas(pair.uas.ring(pair.now, 100, "Trying")).flush()
    assert "> CANCEL" in pair.trace and pair.uas.state is CallState.TERMINATED


def test_cancel_crossing_a_2xx_acks_then_byes() -> None:
    """The 2xx crossed our CANCEL: ACK it, then BYE (§9.1); the call never counts as answered."""
    pair = Pair().call()
    pair.on_uas(pair.uas.ring(pair.now)).flush()
    cancel_out = pair.uac.cancel(pair.now)
    pair.on_uas(pair.uas.answer(pair.now, ANSWER))
    pair.on_uac(cancel_out).flush()
    assert "> ACK" in pair.trace and "> BYE" in pair.trace
    assert pair.uac.state is CallState.TERMINATED and pair.uas.state is CallState.TERMINATED
    assert not any(isinstance(e, CallAnswered) for e in pair.uac_events)


def test_cancel_without_487_gives_up_after_timer_b() -> None:
    """A server that answers neither the CANCEL nor the INVITE: the call ends after 64*T1."""
    pair = Pair().call()
    pair.on_uas(pair.uas.ring(pair.now)).flush()
    pair.on_uac(pair.uac.cancel(pair.now))
    pair.to_uas.clear()
    pair.advance(TIMER_B)
    assert "no answer to the CANCEL" in terminated(pair.uac_events).reason


def test_cancel_after_final_answer_only_gets_200() -> None:
    """A CANCEL arriving after the 2xx has no effect but its own 200 (§9.2)."""
    pair = Pair().call().answered()
    from webphone.sip.build import cancel_for

    out = pair.uas.receive(wire(cancel_for(pair.uac.invite)), pair.now)
    assert [m.status_code for m in sends(out)] == [200]
    assert pair.uas.state is CallState.ANSWERED


def test_cancel_is_refused_in_the_wrong_state() -> None:
    """cancel() on an answered or inbound call is a named error."""
    pair = Pair().call().answered()
    with pytest.raises(CallError, match="not an unanswered outbound"):
        pair.uac.cancel(pair.now)
    with pytest.raises(CallError, match="not an unanswered outbound"):
        pair.uas.cancel(pair.now)


# -- 2xx retransmission and ACK -------------------------------------------------------------


def test_2xx_retransmitted_with_doubling_until_ack() -> None:
    """§13.3.1.4: the 2xx goes again after T1, 2*T1, 4*T1, capped at T2, until the ACK."""
    pair = Pair().call()
    pair.on_uas(pair.uas.answer(pair.now, ANSWER))
    pair.to_uac.clear()
    times = []
    while pair.now < 12:
        deadline = pair.uas.next_deadline()
        pair.advance(deadline - pair.now)
        if pair.to_uac:
            times.append(pair.now)
            pair.to_uac.clear()
    gaps = [round(b - a, 3) for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps[:5] == [T1, 2 * T1, 4 * T1, T2, T2]
    pair.on_uas(pair.uas.handle_timeout(pair.now))
    pair.flush()  # nothing queued: the ACK never went
    ok = pair.uas._oks[pair.uas.invite.cseq.number].response
    pair.on_uas([]).uac.receive(wire(ok), pair.now)


def test_no_ack_within_64_t1_ends_the_call_with_bye() -> None:
    """§13.3.1.4: no ACK for 64*T1: BYE and the call is over."""
    pair = Pair().call()
    pair.on_uas(pair.uas.answer(pair.now, ANSWER))
    pair.to_uac.clear()
    while pair.uas.state is CallState.ANSWERED:
        pair.advance(pair.uas.next_deadline() - pair.now)
        pair.to_uac[:] = [m for m in pair.to_uac if not isinstance(m, SipResponse)]
    assert pair.now == pytest.approx(TIMER_B)
    assert [m.method for m in pair.to_uac] == ["BYE"]
    assert terminated(pair.uas_events).reason == "no ACK for the 200 OK"


def test_retransmitted_2xx_is_acked_again() -> None:
    """§13.2.2.4: a 2xx that comes again (our ACK was lost) is ACKed again, not re-announced."""
    pair = Pair().call()
    pair.on_uas(pair.uas.answer(pair.now, ANSWER)).flush()
    pair.advance(T1)  # the callee had not yet seen the ACK? it has: nothing is sent
    assert pair.to_uac == []
    ok = response_to(pair.uas.invite, 200, "OK", to_tag=pair.uas.local_tag,
                     contact=CALLEE.contact, body=ANSWER.encode(), content_type="application/sdp")
    out = pair.uac.receive(wire(ok), pair.now)
    assert [m.method for m in sends(out)] == ["ACK"] and events(out) == []


def test_forked_2xx_is_acked_and_ended() -> None:
    """A 2xx from a second fork (other To tag): ACK and BYE it (§13.2.2.4)."""
    pair = Pair().call().answered()
    fork = response_to(pair.uas.invite, 200, "OK", to_tag="fork2", contact="<sip:c@x>")
    out = pair.uac.receive(wire(fork), pair.now)
    acks = sends(out)
    assert [m.method for m in acks] == ["ACK", "BYE"] and acks[1].uri == "sip:c@x"
    assert pair.uac.state is CallState.ANSWERED


def test_stray_responses_are_ignored() -> None:
    """Responses for nothing we sent, on an inbound call or not a 2xx: no output."""
    pair = Pair().call().answered()
    stray = response_to(pair.uas.invite, 486, "Busy", to_tag="zz")
    assert pair.uac.receive(wire(stray), pair.now) == []
    assert pair.uas.receive(wire(stray), pair.now) == []
    old = make_invite(cseq=9)
    old.headers.set("Call-ID", pair.uac.call_id)
    assert pair.uac.receive(wire(response_to(old, 200, "OK", to_tag="q")), pair.now) == []


def test_duplicate_ack_is_absorbed() -> None:
    """A second ACK produces nothing."""
    pair = Pair().call().answered()
    ack = next(m for m in pair.uas_events if isinstance(m, AckReceived)).request
    assert pair.uas.receive(ack, pair.now) == []


def test_offerless_invite_gets_answer_in_ack() -> None:
    """An INVITE without SDP: our offer in the 2xx, the answer in the ACK body."""
    pair = Pair().call(make_invite(body=""))
    pair.on_uas(pair.uas.answer(pair.now, OFFER))
    ok = pair.to_uac.pop()
    pair.uac.receive(ok, pair.now)  # the caller's ACK without body
    pair.to_uas.clear()
    dialog = pair.uac.dialog
    ack = SipRequest("ACK", dialog.remote_target, body=ANSWER.encode())
    for name, value in dialog.request_fields("ACK", cseq=1)[1]:
        ack.headers.add(name, value)
    ack.headers.add("Via", f"{CALLER.via};branch=z9hG4bKack2")
    ack.headers.add("Content-Type", "application/sdp")
    out = pair.uas.receive(wire(ack), pair.now)
    assert kinds(out) == ["AckReceived"] and pair.uas.remote_sdp == ANSWER


# -- in-dialog requests ---------------------------------------------------------------------


def test_reinvite_refreshes_target_only_when_accepted() -> None:
    """A re-INVITE with a new Contact moves the target at the 2xx, not before (§12.2.2)."""
    pair = Pair().call().answered()
    invite, out = pair.uac.request("INVITE", pair.now, body=OFFER.encode())
    invite.headers.set("Contact", "<sip:a@moved.invalid>")
    pair.to_uas.append(wire(invite))
    pair.uac_events += events(out)
    pair.flush()
    (received,) = [e for e in pair.uas_events if isinstance(e, RequestReceived)]
    assert pair.uas.dialog.remote_target == "sip:a@caller.invalid;transport=ws"
    pair.on_uas(pair.uas.reply(received.request, 488, "Not Acceptable Here", pair.now))
    pair.flush()
    assert pair.uas.dialog.remote_target == "sip:a@caller.invalid;transport=ws"
    invite2, out = pair.uac.request("INVITE", pair.now, body=OFFER.encode())
    invite2.headers.set("Contact", "<sip:a@moved.invalid>")
    pair.to_uas.append(wire(invite2))
    pair.flush()
    received = [e for e in pair.uas_events if isinstance(e, RequestReceived)][-1]
    pair.on_uas(pair.uas.reply(received.request, 200, "OK", pair.now, body=ANSWER.encode()))
    pair.flush()
    assert pair.uas.dialog.remote_target == "sip:a@moved.invalid"
    assert pair.trace[-2:] == ["< 200", "> ACK"] and pair.uas.next_deadline() is None


def test_reinvite_glare_gets_491() -> None:
    """§14.1: both sides re-INVITE at once: each refuses the other's with 491."""
    pair = Pair().call().answered()
    _, out_a = pair.uac.request("INVITE", pair.now, body=OFFER.encode())
    _, out_b = pair.uas.request("INVITE", pair.now, body=ANSWER.encode())
    with pytest.raises(CallError, match="already has one"):
        pair.uac.request("INVITE", pair.now)
    pair.on_uac(out_a).on_uas(out_b).flush()
    assert pair.trace.count("< 491") == 1 and pair.trace.count("> 491") == 1
    assert pair.uac._reinvite_key is None
    assert pair.uac.state is CallState.ANSWERED and pair.uas.state is CallState.ANSWERED


def test_in_dialog_info_is_delivered_and_answered() -> None:
    """INFO comes out as RequestReceived; reply() answers it; a repeat gets the same answer."""
    pair = Pair().call().answered()
    _info, out = pair.uac.request("INFO", pair.now, body=b"{}", content_type="application/json")
    pair.on_uac(out).flush()
    received = pair.uas_events[-1]
    assert isinstance(received, RequestReceived) and received.request.method == "INFO"
    pair.on_uas(pair.uas.reply(received.request, 200, "OK", pair.now)).flush()
    assert isinstance(pair.uac_events[-1], ResponseReceived)
    with pytest.raises(CallError, match="no pending INFO"):
        pair.uas.reply(received.request, 200, "OK", pair.now)


def test_repeated_request_gets_last_response_again() -> None:
    """A retransmitted in-dialog request gets its last response again (§17.2.2)."""
    pair = Pair().call().answered()
    info, out = pair.uac.request("INFO", pair.now)
    pair.on_uac(out).flush()
    received = pair.uas_events[-1].request  # type: ignore[union-attr]
    pair.uas.reply(received, 100, "Trying", pair.now)
    again = pair.uas.receive(wire(info), pair.now)
    assert [m.status_code for m in sends(again)] == [100]


def test_out_of_order_cseq_gets_500() -> None:
    """§12.2.2: an in-dialog request with a lower CSeq is refused with 500 + Retry-After."""
    pair = Pair().call().answered()
    info, out = pair.uac.request("INFO", pair.now)
    pair.on_uac(out).flush()
    old = info.copy()
    old.headers.set("CSeq", "1 INFO")
    old.headers.set("Via", f"{CALLER.via};branch=z9hG4bKold")
    (response,) = sends(pair.uas.receive(wire(old), pair.now))
    assert response.status_code == 500 and response.headers["Retry-After"] == "1"


def test_request_for_another_dialog_gets_481() -> None:
    """A request with tags that are not the dialog's: 481."""
    pair = Pair().call().answered()
    info, _ = pair.uac.request("INFO", pair.now)
    info.headers.set("From", "<sip:a@example.com>;tag=stranger")
    (response,) = sends(pair.uas.receive(wire(info), pair.now))
    assert response.status_code == 481


def test_481_to_in_dialog_request_ends_the_call() -> None:
    """§12.2.1.2: a 481 (or 408) to our request means the dialog is gone."""
    pair = Pair().call().answered()
    info, out = pair.uac.request("INFO", pair.now)
    lost = response_to(info, 481, "Gone", to_tag=pair.uas.local_tag)
    out = pair.uac.receive(wire(lost), pair.now)
    assert terminated(out).reason == "dialog lost (481)"


def test_in_dialog_timeout_ends_the_call_with_bye() -> None:
    """§12.2.1.2: no answer at all to an in-dialog request ends the dialog (BYE, terminated)."""
    pair = Pair().call().answered()
    _, out = pair.uac.request("INFO", pair.now, timeout=5.0)
    pair.on_uac(out).advance(5.0)
    assert terminated(pair.uac_events).reason == "no answer to INFO"
    assert [m.method for m in pair.to_uas] == ["INFO", "BYE"]


def test_reinvite_timeout_frees_the_glare_slot() -> None:
    """A re-INVITE without answer ends its slot (and, answered, the call)."""
    pair = Pair().call().answered()
    _, _out = pair.uac.request("INVITE", pair.now, timeout=5.0)
    pair.advance(5.0)
    assert pair.uac._reinvite_key is None
    assert pair.uac.state is CallState.TERMINATED


def test_unanswered_bye_does_not_send_another_bye() -> None:
    """A BYE that times out only reports the timeout."""
    pair = Pair().call().answered()
    pair.on_uac(pair.uac.hangup(pair.now))
    pair.to_uas.clear()
    pair.advance(TIMER_B)
    assert pair.to_uas == [] and isinstance(pair.uac_events[-1], TransactionTimeout)


def test_requests_after_the_end_are_refused() -> None:
    """No dialog, or a terminated call: request() raises, an inbound request gets 481."""
    pair = Pair().call()
    with pytest.raises(CallError, match="has no dialog"):
        pair.uac.request("INFO", pair.now)
    pair.answered()
    info, _ = pair.uac.request("INFO", pair.now)
    pair.on_uac(pair.uac.hangup(pair.now)).flush()
    (response,) = sends(pair.uas.receive(wire(info), pair.now))
    assert response.status_code == 481
    with pytest.raises(CallError, match="not answered"):
        pair.uas.hangup(pair.now)


def test_callee_actions_refused_on_outbound_call_and_after_answer() -> None:
    """ring/answer on the caller side, or twice, name the call and state."""
    pair = Pair().call().answered()
    with pytest.raises(CallError, match="outbound call in state answered"):
        pair.uac.ring(pair.now)
    with pytest.raises(CallError, match="inbound call in state answered"):
        pair.uas.answer(pair.now, ANSWER)


def test_illegal_state_change_is_refused() -> None:
    """The call state table refuses terminated -> answered."""
    pair = Pair().call()
    pair.on_uas(pair.uas.reject(pair.now, 603, "Decline"))
    with pytest.raises(CallError, match="terminated -> answered"):
        pair.uas._set_state(CallState.ANSWERED)


# -- authentication retry -------------------------------------------------------------------


def test_retry_invite_after_challenge() -> None:
    """A 407 ends the first INVITE transaction; retry_invite sends the new one, same call."""
    pair = Pair().call()
    challenge = response_to(pair.uas.invite, 407, "Proxy Authentication Required", to_tag="p")
    out = pair.uac.receive(wire(challenge), pair.now)
    assert terminated(out).status == 407
    fresh = Pair().call()
    retry = make_invite()
    with pytest.raises(CallError, match="not an outbound call in init"):
        pair.uac.retry_invite(retry, pair.now)
    out = fresh.uac.retry_invite(retry, fresh.now)
    assert sends(out) == [retry] and fresh.uac.invite is retry


# -- RingCentral ids and serialisation ------------------------------------------------------


def test_rc_ids_are_read_from_invite_and_responses() -> None:
    """p-rc-api-ids gives party and session ids, from whichever message carries them."""
    invite = make_invite(headers=[("p-rc-api-ids", "party-id=p-1;session-id=s-1")])
    pair = Pair().call(invite)
    assert pair.uas.party_id == "p-1" and pair.uas.session_id == "s-1"
    assert pair.uac.party_id == "p-1"


def test_call_round_trip_through_json() -> None:
    """to_dict is plain JSON, versioned; from_dict restores state, dialog, SDP, ids."""
    pair = Pair().call(make_invite(headers=[("p-rc-api-ids", "party-id=p;session-id=s")]))
    pair.answered()
    for core, local in ((pair.uac, CALLER), (pair.uas, CALLEE)):
        data = json.loads(json.dumps(core.to_dict()))
        again = CallCore.from_dict(data, local)
        assert again.to_dict() == core.to_dict()
        assert again.dialog == core.dialog and again.state is CallState.ANSWERED
        assert again.party_id == "p" and again.outbound is core.outbound


def test_adopted_call_continues_the_dialog_above_the_old_cseq() -> None:
    """A successor adopts the confirmed dialog and hangs up with a CSeq the peer accepts."""
    pair = Pair().call().answered()
    info, out = pair.uac.request("INFO", pair.now)  # the old holder sent one more request
    pair.on_uac(out).flush()
    pair.on_uas(pair.uas.reply(pair.uas_events[-1].request, 200, "OK", pair.now)).flush()
    successor = CallCore.from_dict(json.loads(json.dumps(pair.uac.to_dict())), CALLER)
    successor.dialog.adopt()
    (bye,) = sends(successor.hangup(pair.now))
    assert bye.cseq.number > info.cseq.number
    out = pair.uas.receive(wire(bye), pair.now)
    assert [m.status_code for m in sends(out)] == [200]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 9}, "call.version is 9"),
        ({"invite": 3}, "call.invite must be a string"),
        ({"invite": "SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"}, "is a response"),
        ({"direction": "sideways"}, "not inbound or outbound"),
        ({"state": "dancing"}, "not a call state"),
        ({"dialog": []}, "call.dialog must be an object"),
        ({"local_sdp": 5}, "call.local_sdp must be a string"),
    ],
)
def test_call_from_dict_names_the_bad_field(change: dict[str, object], message: str) -> None:
    """Unusable call state is refused with the field's name."""
    pair = Pair().call()
    data = {**pair.uac.to_dict(), **change}
    with pytest.raises(SipParseError, match=message):
        CallCore.from_dict(data, CALLER)


def test_unanswered_call_round_trip_has_no_dialog() -> None:
    """An INVITE that got no answer yet serialises with dialog null."""
    pair = Pair().call()
    again = CallCore.from_dict(pair.uac.to_dict(), CALLER)
    assert again.dialog is None and again.state is CallState.INIT


def test_ringing_event_carries_the_response() -> None:
    """CallRinging on the caller holds the 180 (tags for the early dialog)."""
    pair = Pair().call()
    pair.on_uas(pair.uas.ring(pair.now)).flush()
    (ringing,) = [e for e in pair.uac_events if isinstance(e, CallRinging)]
    assert ringing.response.status_code == 180 and pair.uac.dialog is not None
    assert pair.uac.dialog.state.value == "early"


def test_callee_bye_waits_for_the_ack() -> None:
    """§15.1.1: the callee's BYE is held back until the ACK of its 2xx, then sent."""
    pair = Pair().call()
    pair.on_uas(pair.uas.answer(pair.now, ANSWER))
    with pytest.raises(CallError, match="already has one"):  # §14.1: the 2xx awaits its ACK
        pair.uas.request("INVITE", pair.now)
    out = pair.uas.hangup(pair.now)
    assert sends(out) == [] and terminated(out).reason == "hung up"
    pair.flush()
    assert pair.trace[-3:] == ["> ACK", "< BYE", "> 200"]
    assert pair.uac.state is CallState.TERMINATED and pair.uas.next_deadline() is None


def test_callee_bye_held_back_leaves_at_give_up() -> None:
    """No ACK ever: the held-back BYE leaves after 64*T1 all the same."""
    pair = Pair().call()
    pair.on_uas(pair.uas.answer(pair.now, ANSWER))
    pair.on_uas(pair.uas.hangup(pair.now))
    pair.to_uac.clear()
    pair.advance(TIMER_B)
    assert [m.method for m in pair.to_uac if isinstance(m, SipRequest)] == ["BYE"]


def test_early_dialog_requests_keep_their_cseq_after_the_2xx() -> None:
    """A request sent in the early dialog keeps its CSeq used: the next one is above it."""
    pair = Pair().call()
    pair.on_uas(pair.uas.ring(pair.now)).flush()
    info, out = pair.uac.request("INFO", pair.now)
    pair.on_uac(out).flush()
    pair.on_uas(pair.uas.reply(pair.uas_events[-1].request, 200, "OK", pair.now)).flush()
    pair.on_uas(pair.uas.answer(pair.now, ANSWER)).flush()
    (bye,) = sends(pair.uac.hangup(pair.now))
    assert bye.cseq.number == info.cseq.number + 1


def test_shell_run_invite_feeds_responses_to_the_core() -> None:
    """invite_response: the shell's own INVITE transaction reports 180 and 200; the core makes
    the early dialog, confirms it and ACKs the 2xx."""
    invite = make_invite()
    core = CallCore(local=CALLER, outbound=True, invite=invite)
    ringing = response_to(invite, 180, "Ringing", to_tag="r1", contact="<sip:b@x>")
    assert kinds(core.invite_response(wire(ringing), 0.0)) == ["CallRinging"]
    assert core.dialog is not None and core.dialog.state.value == "early"
    ok = response_to(invite, 200, "OK", to_tag="r1", contact="<sip:b@y>")
    out = core.invite_response(wire(ok), 0.1)
    assert [m.method for m in sends(out)] == ["ACK"] and core.state is CallState.ANSWERED
    assert core.dialog.remote_target == "sip:b@y" and core.dialog.confirmed
    inbound = Pair().call().uas
    with pytest.raises(CallError, match="inbound call"):
        inbound.invite_response(wire(ok), 0.0)


def test_end_stops_every_timer() -> None:
    """end(): the shell ended the call itself; no 2xx retransmission outlives it."""
    pair = Pair().call()
    pair.on_uas(pair.uas.answer(pair.now, ANSWER))
    assert pair.uas.next_deadline() is not None
    assert terminated(pair.uas.end("hung up")).reason == "hung up"
    assert pair.uas.next_deadline() is None and pair.uas.end("again") == []


def test_shell_run_requests_report_back_to_the_core() -> None:
    """build_request/request_done: a shell-run re-INVITE holds the glare slot until done; its
    2xx is ACKed by the core and refreshes the target; a digest retry's CSeq is kept."""
    pair = Pair().call().answered()
    reinvite = pair.uac.build_request("INVITE", body=OFFER.encode())
    with pytest.raises(CallError, match="already has one"):
        pair.uac.build_request("INVITE")
    pair.to_uas.append(wire(reinvite))
    pair.flush()
    received = [e for e in pair.uas_events if isinstance(e, RequestReceived)][-1].request
    pair.on_uas(pair.uas.reply(received, 200, "OK", pair.now, body=ANSWER.encode()))
    ok = pair.to_uac.pop()
    retried = ok.copy()
    retried.headers.set("CSeq", f"{reinvite.cseq.number + 1} INVITE")  # after a 407 retry
    out = pair.uac.request_done(reinvite, retried, pair.now)
    assert [m.method for m in sends(out)] == ["ACK"]
    assert pair.uac.dialog.local_cseq == reinvite.cseq.number + 1
    assert pair.uac.build_request("INFO").cseq.number == reinvite.cseq.number + 2
    assert pair.uac.request_done(reinvite, None, pair.now) == []


def test_shell_run_request_481_ends_the_call() -> None:
    """request_done with a 481: the dialog is gone (§12.2.1.2)."""
    pair = Pair().call().answered()
    info = pair.uac.build_request("INFO")
    gone = response_to(info, 481, "Gone", to_tag=pair.uas.local_tag)
    assert terminated(pair.uac.request_done(info, wire(gone), pair.now)).reason == \
        "dialog lost (481)"
    fresh = CallCore(local=CALLER, outbound=True, invite=make_invite())
    with pytest.raises(CallError, match="has no dialog"):
        fresh.build_request("BYE")


def test_refused_reinvite_does_not_block_ours() -> None:
    """After we refused the peer's re-INVITE (488), our own may leave before its ACK came;
    an unanswered one of theirs blocks ours (§14.1)."""
    pair = Pair().call().answered()
    theirs = pair.uas.build_request("INVITE", body=ANSWER.encode())
    out = pair.uac.receive(wire(theirs), pair.now)
    (received,) = [e for e in out if isinstance(e, RequestReceived)]
    with pytest.raises(CallError, match="already has one"):
        pair.uac.build_request("INVITE")
    pair.uac.reply(received.request, 488, "Not Acceptable Here", pair.now)
    assert pair.uac.build_request("INVITE").method == "INVITE"


# -- our offerless re-INVITE: the far party offers in the 2xx, we answer in the ACK ------------


def offerless_reinvite(pair: Pair) -> tuple[SipRequest, SipResponse]:
    """The caller sends a re-INVITE without SDP (shell-run); the callee answers 200 with its
    offer. Returns the re-INVITE and the 200 (not yet delivered)."""
    reinvite = pair.uac.build_request("INVITE")
    assert not reinvite.body
    pair.to_uas.append(wire(reinvite))
    pair.flush()
    received = [e for e in pair.uas_events if isinstance(e, RequestReceived)][-1].request
    pair.on_uas(pair.uas.reply(received, 200, "OK", pair.now, body=OFFER.encode()))
    return reinvite, pair.to_uac.pop()


def test_offerless_reinvite_acks_with_the_shells_answer() -> None:
    """RFC 3264 §4 / RFC 3261 §13.2.2.4: the 2xx's offer is reported, no empty ACK leaves, and
    the ACK the shell asks for carries the answer; the callee gets it and stops retransmitting."""
    pair = Pair().call().answered()
    reinvite, ok = offerless_reinvite(pair)
    out = pair.uac.request_done(reinvite, ok, pair.now)
    (needed,) = [o for o in out if isinstance(o, AnswerNeeded)]
    assert sends(out) == [] and needed.offer == OFFER and needed.response is ok
    assert pair.uac.remote_sdp == OFFER
    out = pair.uac.ack_answer(ANSWER)
    (ack,) = sends(out)
    assert ack.method == "ACK" and ack.cseq.number == reinvite.cseq.number
    assert ack.body == ANSWER.encode() and ack.headers.get("Content-Type") == "application/sdp"
    assert pair.uac.local_sdp == ANSWER
    acked = pair.uas.receive(wire(ack), pair.now)
    assert kinds(acked) == ["AckReceived"] and pair.uas.remote_sdp == ANSWER
    assert pair.uas.next_deadline() is None


def test_offerless_reinvite_holds_the_glare_slot_until_the_ack() -> None:
    """§14.1: until the answer is in the ACK the offer/answer is not complete: no new re-INVITE
    of ours, and the far party's gets 491."""
    pair = Pair().call().answered()
    reinvite, ok = offerless_reinvite(pair)
    pair.uac.request_done(reinvite, ok, pair.now)
    with pytest.raises(CallError, match="already has one"):
        pair.uac.build_request("INVITE")
    # (the callee's own core would wait for our ACK first: a peer that does not, built by hand)
    theirs = pair.uas._build(pair.uas.dialog, "INVITE", body=ANSWER.encode())
    refused = sends(pair.uac.receive(wire(theirs), pair.now))
    assert [r.status_code for r in refused] == [491]
    pair.uac.ack_answer(ANSWER)
    assert pair.uac.build_request("INVITE").method == "INVITE"


def test_a_successors_invite_takes_the_unacked_2xx_of_a_dead_peer_as_acked() -> None:
    """The peer dies between its offerless re-INVITE and the ACK; its successor adopts the
    dialog and re-INVITEs (§14.1: so the earlier one is over): our 2xx is taken as ACKed
    (`AckLost` before the new request), no longer retransmitted, no BYE at 64*T1, and our own
    re-INVITE may leave once the new one is answered."""
    pair = Pair().call().answered()
    record = json.loads(json.dumps(pair.uac.to_dict()))
    reinvite, _ = offerless_reinvite(pair)  # our 200 with an offer; the peer died: no ACK
    successor = CallCore.from_dict(record, CALLER)
    successor.dialog.adopt()
    newer = successor.build_request("INVITE", body=OFFER.encode())
    out = pair.uas.receive(wire(newer), pair.now)
    assert kinds(out) == ["AckLost", "RequestReceived"]
    assert out[0] == AckLost(cseq=reinvite.cseq.number)
    pair.on_uas(pair.uas.reply(out[1].request, 200, "OK", pair.now, body=ANSWER.encode()))
    (ok,) = pair.to_uac
    pair.to_uac.clear()
    successor.request_done(newer, wire(ok), pair.now)  # ACKed: the callee is done with it
    pair.on_uas(pair.uas.receive(wire(sends(successor.receive(wire(ok), pair.now))[0]),
                                 pair.now))
    assert pair.uas.build_request("INVITE").method == "INVITE"
    pair.advance(TIMER_B + 1)
    assert not [m for m in pair.to_uac if isinstance(m, SipRequest) and m.method == "BYE"]
    assert pair.uas.state is CallState.ANSWERED


def test_retransmitted_2xx_gets_the_same_ack_with_the_answer() -> None:
    """A 2xx retransmitted while the answer is being made gets no ACK; after it, the ACK
    with the answer is sent again for each retransmission (§13.2.2.4)."""
    pair = Pair().call().answered()
    reinvite, ok = offerless_reinvite(pair)
    pair.uac.request_done(reinvite, ok, pair.now)
    assert pair.uac.receive(ok, pair.now) == []
    (ack,) = sends(pair.uac.ack_answer(ANSWER))
    (again,) = sends(pair.uac.receive(ok, pair.now))
    assert again is ack


def test_offerless_reinvite_through_the_cores_own_transaction() -> None:
    """The same rule when the core runs the re-INVITE's transaction (`request`)."""
    pair = Pair().call().answered()
    _, out = pair.uac.request("INVITE", pair.now)
    pair.on_uac(out).flush()
    received = [e for e in pair.uas_events if isinstance(e, RequestReceived)][-1].request
    pair.on_uas(pair.uas.reply(received, 200, "OK", pair.now, body=OFFER.encode()))
    pair.flush()
    assert any(isinstance(e, AnswerNeeded) for e in pair.uac_events)
    assert pair.trace[-1] == "< 200"
    pair.on_uac(pair.uac.ack_answer(ANSWER)).flush()
    assert pair.trace[-1] == "> ACK" and pair.uas.remote_sdp == ANSWER


def test_offerless_reinvite_answered_without_sdp_is_acked_at_once() -> None:
    """A 2xx without an offer (the peer broke RFC 3264 §4) is ACKed empty at once."""
    pair = Pair().call().answered()
    reinvite = pair.uac.build_request("INVITE")
    pair.to_uas.append(wire(reinvite))
    pair.flush()
    received = [e for e in pair.uas_events if isinstance(e, RequestReceived)][-1].request
    pair.on_uas(pair.uas.reply(received, 200, "OK", pair.now))
    out = pair.uac.request_done(reinvite, pair.to_uac.pop(), pair.now)
    assert [m.method for m in sends(out)] == ["ACK"] and not sends(out)[0].body


def test_ack_answer_needs_a_waiting_2xx_and_may_carry_nothing() -> None:
    """ack_answer() without a waiting 2xx is refused by name; `None` sends an empty ACK (an
    unusable offer: the shell then ends the call with BYE, §13.2.2.4)."""
    pair = Pair().call().answered()
    with pytest.raises(CallError, match="no 2xx waiting for an answer"):
        pair.uac.ack_answer(ANSWER)
    reinvite, ok = offerless_reinvite(pair)
    pair.uac.request_done(reinvite, ok, pair.now)
    (ack,) = sends(pair.uac.ack_answer(None))
    assert not ack.body and pair.uac.local_sdp == OFFER
