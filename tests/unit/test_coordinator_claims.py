"""A hello's epoch is a claim (issue 13 item 10): it never demotes a live real of this hub."""

from __future__ import annotations

from test_coordinator import Hub

from webphone.shared.protocol import RoleChange, Welcome


def test_a_hello_claiming_a_huge_epoch_does_not_demote_a_live_real() -> None:
    """`real: true, epoch: 2**48` from a newcomer: it joins as a dummy, the real stays."""
    hub = Hub()
    a = hub.ready_real("a")
    hub.advance(6, alive=(a,))  # past the rejoin window of the hub's start
    epoch = hub.c.epoch
    intruder = hub.join("x", epoch=2**48, real=True)
    assert hub.c.real == a and hub.c.epoch == epoch and hub.c.real_ready
    assert hub.last(intruder, Welcome).role == "dummy"
    assert hub.take(a, RoleChange) == []


def test_a_real_promoted_by_this_hub_is_not_demoted_even_right_after_the_start() -> None:
    """Within the rejoin window, only a real adopted from a hello can be stale."""
    hub = Hub()
    a = hub.ready_real("a")  # promoted here at epoch 1
    hub.join("x", epoch=2**40, real=True)
    assert hub.c.real == a and hub.c.epoch == 1
