"""Hypothesis: random action sequences, reordered and duplicated messages, timers firing.

Invariants: the cores raise nothing but `CallError` for a refused action; call states only move
forward; every message they produce parses; a terminated call stays terminated; once both sides
are answered their dialogs agree; and with every message delivered in the end and time run out,
both sides agree on whether the call is up and no timer is left.
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.sip_pair import ANSWER, OFFER, Pair
from webphone.errors import CallError
from webphone.sip.ua import CallCore, CallState, RequestReceived

ORDER = [CallState.INIT, CallState.RINGING, CallState.ANSWERED, CallState.TERMINATED]

ACTIONS = st.one_of(
    st.sampled_from(["ring", "trying", "answer", "reject", "cancel", "bye_uac", "bye_uas",
                     "info", "reinvite_uac", "reinvite_uas", "reply_ok", "reply_491",
                     "reinvite_offerless", "ack_answer"]),
    st.tuples(st.sampled_from(["to_uas", "to_uac"]), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from([0.1, 0.5, 2.0, 4.0, 40.0])),
)


def act(pair: Pair, action: object) -> None:
    """One step: an action of a side, a delivery (maybe out of order, maybe kept = duplicated),
    or time passing."""
    uac, uas, now = pair.uac, pair.uas, pair.now
    assert uac is not None and uas is not None
    if isinstance(action, tuple) and action[0] == "advance":
        pair.advance(action[1])
        return
    if isinstance(action, tuple):
        queue_name, index, duplicate = action
        queue = getattr(pair, queue_name)
        if not queue:
            return
        message = queue[index % len(queue)] if duplicate else queue.pop(index % len(queue))
        if queue_name == "to_uas":
            pair.on_uas(uas.receive(message, now))
        else:
            pair.on_uac(uac.receive(message, now))
        return
    pending = [e.request for e in pair.uas_events if isinstance(e, RequestReceived)]
    steps = {
        "ring": lambda: pair.on_uas(uas.ring(now)),
        "trying": lambda: pair.on_uas(uas.ring(now, 100, "Trying")),
        "answer": lambda: pair.on_uas(uas.answer(now, ANSWER)),
        "reject": lambda: pair.on_uas(uas.reject(now, 486, "Busy Here")),
        "cancel": lambda: pair.on_uac(uac.cancel(now)),
        "bye_uac": lambda: pair.on_uac(uac.hangup(now)),
        "bye_uas": lambda: pair.on_uas(uas.hangup(now)),
        "info": lambda: pair.on_uac(uac.request("INFO", now)[1]),
        "reinvite_uac": lambda: pair.on_uac(uac.request("INVITE", now, body=OFFER.encode())[1]),
        "reinvite_uas": lambda: pair.on_uas(uas.request("INVITE", now, body=ANSWER.encode())[1]),
        "reply_ok": lambda: pair.on_uas(uas.reply(pending[-1], 200, "OK", now,
                                                  body=ANSWER.encode())),
        "reply_491": lambda: pair.on_uas(uas.reply(pending[-1], 491, "Request Pending", now)),
        # RFC 3264 §4: the callee's 200 (reply_ok) then carries the offer, our ACK the answer
        "reinvite_offerless": lambda: pair.on_uac(uac.request("INVITE", now)[1]),
        "ack_answer": lambda: pair.on_uac(uac.ack_answer(ANSWER)),
    }
    # Refused in this state (or nothing pending): a named error, never a crash.
    with contextlib.suppress(CallError, IndexError):
        steps[str(action)]()


def check(pair: Pair, before: tuple[CallState, CallState]) -> None:
    """The invariants that hold after every step."""
    assert pair.uac is not None and pair.uas is not None
    for core, old in zip((pair.uac, pair.uas), before, strict=True):
        assert ORDER.index(core.state) >= ORDER.index(old)
        deadline = core.next_deadline()
        assert deadline is None or deadline > pair.now
    if pair.uac.state is CallState.ANSWERED and pair.uas.state is CallState.ANSWERED:
        a, b = pair.uac.dialog, pair.uas.dialog
        assert a is not None and b is not None
        assert (a.call_id, a.local_tag, a.remote_tag) == (b.call_id, b.remote_tag, b.local_tag)


def settle(pair: Pair) -> None:
    """Deliver everything, run time out, repeat until quiet."""
    for _ in range(20):
        pair.flush()
        pair.advance(100.0)
        if not pair.to_uac and not pair.to_uas:
            break
    assert pair.uac is not None and pair.uas is not None
    assert pair.uac.next_deadline() is None and pair.uas.next_deadline() is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ACTIONS, max_size=40))
def test_random_sequences_keep_the_invariants(actions: list[object]) -> None:
    """Any sequence: no crash, states move forward, both sides agree once all is delivered."""
    pair = Pair().call()
    for action in actions:
        assert pair.uac is not None and pair.uas is not None
        before = (pair.uac.state, pair.uas.state)
        act(pair, action)
        check(pair, before)
    settle(pair)
    assert pair.uac is not None and pair.uas is not None
    up = {pair.uac.state is CallState.ANSWERED, pair.uas.state is CallState.ANSWERED}
    assert len(up) == 1, (pair.uac.state, pair.uas.state, pair.trace)


@settings(max_examples=150, deadline=None)
@given(st.lists(ACTIONS, max_size=30))
def test_state_survives_a_json_round_trip_at_any_point(actions: list[object]) -> None:
    """At any point, to_dict -> from_dict -> to_dict is the identity."""
    import json

    pair = Pair().call()
    for action in actions:
        act(pair, action)
        for core in (pair.uac, pair.uas):
            assert core is not None
            data = json.loads(json.dumps(core.to_dict()))
            assert CallCore.from_dict(data, core.local).to_dict() == core.to_dict()


def test_a_callees_bye_that_overtakes_its_2xx_ends_the_call_at_both_ends() -> None:
    """Found by the test above: the callee answers, its 2xx goes unacknowledged for 64*T1, it
    hangs up (§13.3.1.4), and its BYE reaches the caller before the 2xx. The caller answers
    481 (no dialog yet) and, when the 2xx arrives, ACKs it and ends the call instead of
    staying answered alone."""
    pair = Pair().call()
    for action in ["trying", "answer", ("to_uac", 0, False), ("advance", 40.0),
                   ("to_uac", 1, False)]:
        act(pair, action)
    settle(pair)
    assert pair.uac is not None and pair.uas is not None
    assert (pair.uac.state, pair.uas.state) == (CallState.TERMINATED, CallState.TERMINATED)
    assert pair.trace[:4] == ["> INVITE", "> 481", "< 200", "> ACK"]
