"""Sandbox registrar core: RingCentral's limits, replacement, expiry, lost connections.

Unit cases pin each rule; a hypothesis state machine drives random REGISTERs, expiries and
closed connections against a tiny model and checks the invariants after every step.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from webphone.sandbox.registrar import (
    RegisterRequest,
    Registrar,
    RegistrarError,
    normalize_instance,
    parse_register,
)


def contact(n: int | str, expires: int | None = None, instance: bool = True) -> str:
    value = f"<sip:c{n}@h{n}.invalid;transport=ws>"
    if instance:
        value += f';+sip.instance="<urn:uuid:inst-{n}>";reg-id=1'
    if expires is not None:
        value += f";expires={expires}"
    return value


def req(*contacts: str, call_id: str = "cid", cseq: int = 1, expires: str | None = None,
        aor: str = "101") -> RegisterRequest:
    return parse_register(aor, contacts, expires_header=expires, call_id=call_id, cseq=cseq)


def test_sixth_instance_gets_603_and_changes_nothing() -> None:
    reg = Registrar()
    for n in range(5):
        assert reg.register(req(contact(n, 60), call_id=f"c{n}"), now=0, connection=n).ok
    result = reg.register(req(contact(5, 60), call_id="c5"), now=1, connection=5)
    assert (result.status, result.reason) == (603, "Too Many Contacts")
    assert len(reg.lookup("101", 1)) == 5
    assert all(b.instance != "urn:uuid:inst-5" for b in reg.lookup("101", 1))


def test_same_instance_replaces_its_binding_from_a_new_connection() -> None:
    reg = Registrar()
    for n in range(5):
        reg.register(req(contact(n, 60), call_id=f"c{n}"), now=0, connection=n)
    new_uri = '<sip:fresh@new.invalid;transport=ws>;+sip.instance="<urn:uuid:inst-0>";expires=60'
    result = reg.register(req(new_uri, call_id="other"), now=1, connection="new-ws")
    assert result.ok and len(result.bindings) == 5
    replaced = [b for b in reg.lookup("101", 1) if b.instance == "urn:uuid:inst-0"]
    assert [b.contact for b in replaced] == ["sip:fresh@new.invalid;transport=ws"]
    assert replaced[0].connection == "new-ws"
    # the old connection closing no longer touches the replaced binding
    assert reg.remove_connection(0) == []


def test_granted_expiry_is_clamped_and_zero_removes() -> None:
    reg = Registrar(max_expires=60, min_expires=5)
    assert reg.register(req(contact(1, 3600)), now=0).bindings[0].remaining(0) == 60
    assert reg.register(req(contact(2, 2), call_id="b"), now=0).bindings[1].remaining(0) == 5
    third = reg.register(req(contact(3), call_id="c", expires="30"), now=0)
    assert third.bindings[2].remaining(0) == 30
    removed = reg.register(req(contact(1, 0), cseq=2), now=1)
    assert removed.ok and [b.instance for b in removed.removed] == ["urn:uuid:inst-1"]
    assert len(reg.lookup("101", 1)) == 2


def test_bindings_expire_without_refresh_and_refresh_extends() -> None:
    reg = Registrar(max_expires=10)
    reg.register(req(contact(1, 10)), now=0)
    assert len(reg.lookup("101", 9.9)) == 1
    reg.register(req(contact(1, 10), cseq=2), now=9.9)
    assert len(reg.lookup("101", 19.8)) == 1
    assert reg.lookup("101", 19.9) == []
    assert reg.next_expiry() is None


def test_expire_reports_what_it_dropped() -> None:
    reg = Registrar(max_expires=10)
    reg.register(req(contact(1, 5)), now=0)
    reg.register(req(contact(2, 10), call_id="x"), now=0)
    assert reg.next_expiry() == 5
    assert [b.instance for b in reg.expire(6)] == ["urn:uuid:inst-1"]
    assert len(reg.lookup("101", 6)) == 1


def test_expired_bindings_free_their_slot() -> None:
    reg = Registrar(max_expires=10)
    for n in range(5):
        reg.register(req(contact(n, 10), call_id=f"c{n}"), now=0)
    assert reg.register(req(contact(9, 10), call_id="c9"), now=5).status == 603
    assert reg.register(req(contact(9, 10), call_id="c9"), now=11).ok


def test_closed_connection_drops_its_bindings_only() -> None:
    reg = Registrar()
    reg.register(req(contact(1, 60), call_id="a"), now=0, connection="ws1")
    reg.register(req(contact(2, 60), call_id="b"), now=0, connection="ws2")
    gone = reg.remove_connection("ws1")
    assert [b.instance for b in gone] == ["urn:uuid:inst-1"]
    assert [b.instance for b in reg.lookup("101", 0)] == ["urn:uuid:inst-2"]


def test_query_without_contact_lists_bindings() -> None:
    reg = Registrar()
    reg.register(req(contact(1, 60)), now=0)
    result = reg.register(req(call_id="q"), now=10)
    assert result.ok and len(result.bindings) == 1
    header = result.bindings[0].contact_header(10)
    assert header.startswith("<sip:c1@h1.invalid;transport=ws>;expires=50")
    assert '+sip.instance="<urn:uuid:inst-1>"' in header and "reg-id=1" in header


def test_wildcard_removes_everything_and_needs_expires_zero() -> None:
    reg = Registrar()
    reg.register(req(contact(1, 60), call_id="a"), now=0)
    reg.register(req(contact(2, 60), call_id="b"), now=0)
    with pytest.raises(RegistrarError, match="Expires: 0"):
        req("*", expires="60")
    result = reg.register(req("*", expires="0", call_id="z"), now=1)
    assert result.ok and len(result.removed) == 2 and reg.lookup("101", 1) == []


def test_out_of_order_cseq_within_a_call_id_is_refused() -> None:
    reg = Registrar()
    reg.register(req(contact(1, 60), cseq=5), now=0)
    assert reg.register(req(contact(1, 60), cseq=5), now=1).status == 500
    assert reg.register(req(contact(1, 60), cseq=6), now=1).ok
    assert reg.register(req(contact(1, 60), call_id="new", cseq=1), now=1).ok


def test_contacts_without_instance_match_by_uri() -> None:
    reg = Registrar()
    reg.register(req(contact(1, 60, instance=False)), now=0)
    reg.register(req(contact(1, 30, instance=False), cseq=2), now=1)
    [binding] = reg.lookup("101", 1)
    assert binding.instance is None and binding.remaining(1) == 30


def test_bad_input_is_a_400() -> None:
    with pytest.raises(RegistrarError) as info:
        req("<sip:x@y>;expires=abc")
    assert info.value.status == 400
    with pytest.raises(RegistrarError):
        req("not a uri <")
    with pytest.raises(RegistrarError):
        req(contact(1), expires="-1")
    for bad in ("1²", "٣"):  # digits to str.isdigit(); "²" is no number to int()
        with pytest.raises(RegistrarError, match="is not a number of seconds") as info:
            req(f"<sip:x@y>;expires={bad}")
        assert info.value.status == 400


def test_normalize_instance() -> None:
    assert normalize_instance('"<urn:uuid:abc>"') == "urn:uuid:abc"
    assert normalize_instance("<urn:uuid:abc>") == "urn:uuid:abc"
    assert normalize_instance(None) is None


class RegistrarMachine(RuleBasedStateMachine):
    """Random REGISTER / unregister / expiry / close sequences against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.reg = Registrar(max_contacts=5, max_expires=60, min_expires=1)
        self.now = 0.0
        self.model: dict[int, tuple[float, int]] = {}  # instance -> (expires_at, connection)
        self.cseq = 0

    @rule(
        instance=st.integers(0, 8),
        asked=st.integers(0, 200),
        conn=st.integers(0, 3),
    )
    def register(self, instance: int, asked: int, conn: int) -> None:
        self.cseq += 1
        result = self.reg.register(
            req(contact(instance, asked), call_id=f"c{instance}", cseq=self.cseq),
            now=self.now,
            connection=conn,
        )
        live = {i: v for i, v in self.model.items() if v[0] > self.now}
        granted = 0 if asked == 0 else min(max(asked, 1), 60)
        if granted == 0:
            assert result.ok
            live.pop(instance, None)
        elif instance in live or len(live) < 5:
            assert result.ok
            live[instance] = (self.now + granted, conn)
        else:
            assert result.status == 603
        self.model = live

    @rule(seconds=st.floats(0, 90))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule(conn=st.integers(0, 3))
    def connection_closes(self, conn: int) -> None:
        self.reg.remove_connection(conn)
        self.model = {i: v for i, v in self.model.items() if v[1] != conn}

    @invariant()
    def matches_model(self) -> None:
        live = self.reg.lookup("101", self.now)
        assert len(live) <= 5
        instances = [b.instance for b in live]
        assert len(instances) == len(set(instances))
        expected = {f"urn:uuid:inst-{i}" for i, v in self.model.items() if v[0] > self.now}
        assert set(instances) == expected
        assert all(b.remaining(self.now) <= 60 for b in live)


TestRegistrarMachine = RegistrarMachine.TestCase
TestRegistrarMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
