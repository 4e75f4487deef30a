"""The real's `ActionRunner`: an action during a takeover waits for it; one that completes at
once answers before `start` returns; a media move is waited for only while one is under way."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

import pytest

from support.wait import wait_until
from webphone.errors import CallError
from webphone.shared.member import LinkToken
from webphone.shared.protocol import Action, ErrorInfo
from webphone.shared.runner import ActionRunner


class Sink:
    def __init__(self) -> None:
        self.results: list[tuple[str, Any, ErrorInfo | None]] = []

    def send_result(self, token: LinkToken, action_id: str, *, value: Any = None,
                    error: ErrorInfo | None = None) -> bool:
        self.results.append((action_id, value, error))
        return True


class Mover:
    def __init__(self, moving: bool) -> None:
        self.is_moving = moving
        self.settled_calls: list[str] = []

    def taking(self, holder: str | None) -> Any:
        return contextlib.nullcontext()

    async def release(self, holder: str) -> dict[str, Any]:
        return {}

    async def live(self, holder: str) -> str | None:
        return holder

    def moving(self, call_id: str) -> bool:
        return self.is_moving

    async def settled(self, call_id: str) -> None:
        self.settled_calls.append(call_id)


class Session:
    call_id = "c1"

    def __init__(self) -> None:
        self.held = 0

    async def hold(self) -> None:
        self.held += 1


def runner(takeover: asyncio.Event, mover: Mover, session: Session) -> ActionRunner:
    phone = SimpleNamespace(call_sessions=[session])
    return ActionRunner(phone=lambda: phone, idle=takeover.wait,  # type: ignore[arg-type,return-value]
                        busy=lambda: not takeover.is_set(), publish=lambda: None, warm={},
                        media=mover)


async def test_an_action_during_a_takeover_runs_once_it_is_done() -> None:
    takeover, sink, session = asyncio.Event(), Sink(), Session()
    actions = runner(takeover, Mover(False), session)
    actions.start(sink, Action("a1", "hold", "c1", {}, 5), LinkToken())
    await asyncio.sleep(0)  # a loop turn: nothing would happen in it anyway
    assert sink.results == [] and session.held == 0 and len(actions.tasks) == 1
    takeover.set()
    await asyncio.wait_for(asyncio.gather(*actions.tasks), 1)
    assert sink.results == [("a1", None, None)] and session.held == 1
    actions.close()


@pytest.mark.parametrize("moving", [False, True])
async def test_an_action_that_completes_at_once_answers_before_start_returns(
        moving: bool) -> None:
    takeover, sink, session = asyncio.Event(), Sink(), Session()
    takeover.set()
    mover = Mover(moving)
    actions = runner(takeover, mover, session)
    actions.start(sink, Action("a0", "hold", "c1", {}, 5), LinkToken())
    await asyncio.wait_for(asyncio.gather(*actions.tasks), 1)  # the first has a task (eager.py)
    starter = actions._starter  # ... until the starter's lender has parked
    await wait_until(lambda: starter._lender is not None and starter._lender.parked, 1)
    sink.results.clear()
    mover.settled_calls.clear()
    actions.start(sink, Action("a1", "hold", "c1", {}, 5), LinkToken())
    actions.start(sink, Action("a2", "hold", "nope", {}, 5), LinkToken())
    assert [r[0] for r in sink.results] == ["a1", "a2"] and not actions.tasks  # no task each
    assert sink.results[1][2] is not None and sink.results[1][2].type == "CallError"
    assert mover.settled_calls == (["c1", "nope"] if moving else [])
    actions.close()


async def test_an_error_message_with_control_characters_still_reaches_the_caller() -> None:
    # a peer's text in an exception (a SIP reason phrase) must not stop the answer: the frame
    # refuses control characters, so they become spaces (tab and newline are kept)
    class Failing(Session):
        async def hold(self) -> None:
            raise CallError("488 Not\x00Acceptable\r\nX-Injected: 1\tend")

    takeover, sink = asyncio.Event(), Sink()
    takeover.set()
    actions = runner(takeover, Mover(False), Failing())
    actions.start(sink, Action("a1", "hold", "c1", {}, 5), LinkToken())
    await asyncio.wait_for(asyncio.gather(*actions.tasks), 1)
    ((action_id, _, error),) = sink.results
    assert action_id == "a1" and error is not None and error.type == "CallError"
    assert error.message == "488 Not Acceptable \nX-Injected: 1\tend"
    actions.close()
