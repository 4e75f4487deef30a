"""Action ids: a duplicate is refused even after many actions (the recent-id window evicts in
order, and lookups stay O(1))."""

from __future__ import annotations

from webphone.shared.protocol import Action
from webphone.shared.routing import RECENT_IDS, ActionRouter


def test_recent_ids_window_evicts_oldest_first() -> None:
    router = ActionRouter("g", max_per_caller=10)
    for i in range(RECENT_IDS + 5):
        action = Action(f"a{i}", "hold", "c", {}, 1.0)
        assert not router.is_duplicate("m", action.action_id)
        router.received("m", action, now=0.0, real="r", epoch=1)
        router.result("r", _ok(router, action.action_id))
    assert router.is_duplicate("m", f"a{RECENT_IDS + 4}")
    assert router.is_duplicate("m", "a5")  # still inside the window
    assert not router.is_duplicate("m", "a4")  # evicted
    assert not router.is_duplicate("other", "a5")
    router.forget_caller("m")
    assert not router.is_duplicate("m", "a5")


def _ok(router: ActionRouter, action_id: str):  # type: ignore[no-untyped-def]
    from webphone.shared.protocol import ActionResult

    hub_id = router._by_caller["m"][action_id]
    return ActionResult(hub_id, 1, True, None)
