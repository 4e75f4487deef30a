"""`webphone.media.tune_for_realtime()`: what it freezes, what it still collects, and undo."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from webphone.media import restore_gc, tune_for_realtime


@pytest.fixture(autouse=True)
def _untuned() -> Iterator[None]:
    restore_gc()
    before = gc.get_threshold()
    yield
    restore_gc()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    """A two-object reference cycle nothing else holds; a weak reference tells if it lives."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def _tracked(obj: object) -> bool:
    """Is `obj` among the objects collections examine (frozen ones are not)?"""
    return any(o is obj for o in gc.get_objects())


def test_objects_alive_then_are_frozen_later_ones_are_not() -> None:
    before = {"held": [1, 2]}
    tuning = tune_for_realtime()
    after = {"held": [3, 4]}
    assert not _tracked(before)
    assert _tracked(after)
    # Frozen objects still die by reference counting and leave the permanent generation (a
    # thread left by an earlier test may free some at any moment), so the count can only fall.
    assert tuning.frozen >= gc.get_freeze_count() > 1000  # the interpreter's modules at least
    assert tuning.collect_ms >= 0


def test_garbage_before_tuning_is_collected_not_frozen() -> None:
    gc.disable()  # no automatic collection may find the cycle first
    try:
        dead = _cycle()
        assert dead() is not None
        tune_for_realtime()
        assert dead() is None
    finally:
        gc.enable()


def test_full_collections_come_rarer_and_generation_thresholds_stay() -> None:
    gen0, gen1, _ = gc.get_threshold()
    tuning = tune_for_realtime(full_every=250)
    assert gc.get_threshold() == (gen0, gen1, 250)
    assert tuning.previous_thresholds[:2] == (gen0, gen1)


def test_tuning_again_reclaims_frozen_cycles_that_died() -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    tune_for_realtime()
    del a, b  # a frozen cycle dies: no collection examines it while frozen
    gc.collect()
    assert alive() is not None
    tune_for_realtime()
    assert alive() is None


def test_restore_puts_back_the_hosts_thresholds_after_repeated_tuning() -> None:
    original = gc.get_threshold()
    tune_for_realtime(full_every=50)
    tune_for_realtime(full_every=70)
    restore_gc()
    assert gc.get_threshold() == original
    assert gc.get_freeze_count() == 0


def test_restore_without_tuning_leaves_a_hosts_own_freeze() -> None:
    held = {"held": [5, 6]}
    gc.freeze()
    try:
        restore_gc()
        # Not the count (frozen objects that die leave it): an object frozen by the host stays
        # outside what collections examine.
        assert not _tracked(held)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_bad_interval_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="full_every must be >= 1"):
        tune_for_realtime(full_every=0)
    assert gc.get_freeze_count() == 0
