"""Media placement's pure parts and the plane's two ends without a network: the holder policy
(`placement.choose_holder`), `MediaHost`'s argument checks and per-call order, and
`RemoteMedia`'s queue, error mapping and continuity record. The media itself is a recording
stand-in here (the integration tests use aiortc: tests/integration/test_shared_media.py)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.wait import wait_until
from webphone.errors import GroupProtocolError, MemberLostError, WebPhoneError
from webphone.media.continuity import RESUME_GAP
from webphone.media.errors import DtmfNotAvailableError, MediaError
from webphone.shared import SharedWebPhone
from webphone.shared.media_host import MediaHost
from webphone.shared.placement import check_policy, choose_holder
from webphone.shared.protocol import Action
from webphone.shared.remote_media import RemoteMedia
from webphone.shared.runner import run_action

SDP_OFFER = ("v=0\r\no=- 42 7 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
             "m=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\na=rtpmap:111 opus/48000/2\r\n"
             "a=rtpmap:126 telephone-event/8000\r\na=sendrecv\r\n")
SDP_ANSWER = SDP_OFFER.replace("o=- 42 7", "o=- 99 3").replace(" 111 126", " 0 101").replace(
    "a=rtpmap:111 opus/48000/2\r\na=rtpmap:126", "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101")
INFO = {"username": "101", "password": "pw", "authorizationId": "101", "domain": "d",
        "outboundProxy": "127.0.0.1:1", "transport": "WS", "stunServers": []}


def members(*ids: str, leaving: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [{"member_id": m, "role": "dummy", "leaving": m in leaving} for m in ids]


# -- the policy --------------------------------------------------------------------------------


def test_taker_holds_what_it_answers_and_the_real_the_rest() -> None:
    """"taker": the member that answered; without one (auto-answer, a repair), the real."""
    group = members("r", "a", "b")
    assert choose_holder("taker", taker="a", real="r", call={}, members=group) == "a"
    assert choose_holder("taker", taker=None, real="r", call={}, members=group) == "r"
    assert choose_holder("taker", taker="a", real="r", call={}, members=group,
                         exclude={"a"}) == "r"
    assert choose_holder("real", taker="a", real="r", call={}, members=group) == "r"


def test_moved_media_goes_to_the_least_loaded_member_other_than_the_real() -> None:
    """"taker" moving a call's media (no taker; loads given): the member other than the real
    holding the fewest calls, the first of equals; the real when it is alone."""
    group = [{"member_id": "r", "role": "real"}, *members("a", "b", "c")]
    assert choose_holder("taker", taker=None, real="r", call={}, members=group, exclude={"a"},
                         load={"b": 2, "c": 1}) == "c"
    assert choose_holder("taker", taker=None, real="r", call={}, members=group,
                         load={}) == "a"
    assert choose_holder("taker", taker=None, real="r", call={}, members=group[:2],
                         exclude={"a"}, load={}) == "r"
    assert choose_holder("real", taker=None, real="r", call={}, members=group, load={}) == "r"


def test_a_callable_policy_sees_the_live_members_and_the_taker() -> None:
    """The callable gets the call (with "taker") and the live, not leaving, members."""
    seen: list[Any] = []

    def policy(call: dict[str, Any], live: list[dict[str, Any]]) -> str:
        seen.append((call, [m["member_id"] for m in live]))
        return live[-1]["member_id"]

    group = members("r", "a", "b", "c", leaving=("c",))
    assert choose_holder(policy, taker="a", real="r", call={"id": "x"}, members=group,
                         exclude={"b"}) == "a"
    assert seen == [({"id": "x", "taker": "a"}, ["r", "a"])]


@pytest.mark.parametrize("answer", ["nobody", None, RuntimeError("policy bug")])
def test_a_callable_policy_that_names_no_live_member_leaves_the_media_on_the_real(
    answer: Any,
) -> None:
    """Unknown ids, None and a failing policy all mean: the real holds the media."""

    def policy(call: dict[str, Any], live: list[dict[str, Any]]) -> Any:
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert choose_holder(policy, taker="a", real="r", call={}, members=members("r", "a")) == "r"


@given(ids=st.lists(st.sampled_from("rabcde"), unique=True, max_size=6),
       gone=st.sets(st.sampled_from("abcde")), pick=st.integers(0, 10))
def test_the_holder_is_always_live_or_the_real(ids: list[str], gone: set[str], pick: int) -> None:
    """Whatever a policy says, the holder is a live member not excluded, or the real."""

    def policy(call: dict[str, Any], live: list[dict[str, Any]]) -> str:
        return "abcdefgh"[pick % 8]

    holder = choose_holder(policy, taker=None, real="r", call={}, members=members(*ids),
                           exclude=gone)
    assert holder == "r" or (holder in ids and holder not in gone)


def test_a_bad_policy_is_refused_when_the_phone_is_made() -> None:
    """media= must be "taker", "real" or a callable: said at construction, naming media."""
    with pytest.raises(ValueError, match="media must be 'taker', 'real' or a callable"):
        check_policy("nearest")
    with pytest.raises(TypeError, match="media"):
        SharedWebPhone(INFO, media="nearest")  # type: ignore[arg-type]


# -- the holder's side ---------------------------------------------------------------------------


class Recorder:
    """A stand-in for a MediaSession that records what it was asked, in order."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.direction = "sendrecv"
        self.closed = False

    def set_direction(self, direction: str) -> None:
        self.log.append(("direction", direction))

    def mute(self) -> None:
        self.log.append("mute")

    def unmute(self) -> None:
        self.log.append("unmute")

    async def create_offer(self, ice_restart: bool = False, renew: bool = False) -> str:
        await asyncio.sleep(0)  # a real offer gathers candidates: let others run meanwhile
        self.log.append(("offer", renew))
        return SDP_OFFER

    async def create_answer(self, offer: str) -> str:
        self.log.append("answer")
        return SDP_ANSWER

    async def apply_answer(self, answer: str) -> None:
        self.log.append("apply")

    async def send_dtmf(self, digits: str, duration: float, gap: float) -> None:
        self.log.append(("dtmf", digits, duration, gap))

    async def wait_first_audio(self, timeout: float) -> float:
        return asyncio.get_running_loop().time()

    async def close(self) -> None:
        self.closed = True
        self.log.append("close")


@pytest.fixture
def host() -> MediaHost:
    log: list[Any] = []
    made = MediaHost(lambda call_id, record: Recorder(log))  # type: ignore[arg-type,return-value]
    made.log = log  # type: ignore[attr-defined]
    return made


@pytest.mark.parametrize(("op", "args", "match"), [
    ("media.take", {"record": "x"}, r"media\.take\.args\.record: expected a continuity record"),
    ("media.take", {"extra": 1}, r"media\.take\.args: unknown argument 'extra'"),
    ("media.offer", {"renew": "yes"}, r"media\.offer\.args\.renew: expected true or false"),
    ("media.offer", {"direction": "up"}, r"media\.offer\.args\.direction: expected one of"),
    ("media.answer", {"offer": "hello"}, r"media\.answer\.args\.offer: expected SDP text"),
    ("media.apply_answer", {}, r"media\.apply_answer\.args\.answer: expected SDP text"),
    ("media.update", {"volume": 3}, r"media\.update\.args: unknown argument 'volume'"),
    ("media.update", {"muted": 1}, r"media\.update\.args\.muted: expected true or false"),
    ("media.update", {"dtmf": {"digits": "x"}}, r"media\.update\.args\.dtmf\.digits"),
    ("media.update", {"dtmf": {"digits": "1", "gap": -1}}, r"dtmf\.gap: expected seconds"),
    ("media.update", {"wait_first_audio": 600}, r"wait_first_audio: expected seconds"),
])
async def test_bad_arguments_get_an_error_naming_the_field(
    host: MediaHost, op: str, args: dict[str, Any], match: str
) -> None:
    """Every malformed argument is a GroupProtocolError naming it; the host goes on."""
    if op != "media.take":
        await host.handle("media.take", "c1", {"record": None})
    with pytest.raises(GroupProtocolError, match=match):
        await host.handle(op, "c1", args)
    assert await host.handle("media.take", "c9", {"record": None}) == {}  # and goes on


async def test_media_operations_need_a_take_first_and_one_take_per_call(host: MediaHost) -> None:
    """An op for a call this member holds nothing of, or a second take, is a MediaError."""
    with pytest.raises(MediaError, match=r"holds no media for call 'c1'.*media\.take first"):
        await host.handle("media.offer", "c1", {})
    await host.handle("media.take", "c1", {"record": None})
    with pytest.raises(MediaError, match="already holds the media of call 'c1'"):
        await host.handle("media.take", "c1", {"record": None})
    assert await host.handle("media.close", "c1", {}) == {}
    assert await host.handle("media.close", "c1", {}) == {}  # idempotent
    assert host.sessions == {}


def test_a_first_take_imports_the_media_stack_off_the_event_loop() -> None:
    """A dummy that answers a call takes its media; imported on the event loop, aiortc and PyAV
    (0.5-1 s of CPU) stalled its heartbeats past the hub's timeout under load: the holder was
    judged hung and the call it answered failed (488). The import runs in a worker thread."""
    code = (
        "import asyncio, sys, threading\n"
        "from webphone.shared.media_host import LocalMedia, MediaHost\n"
        "assert 'aiortc' not in sys.modules\n"
        "on_loop = []\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'aiortc':\n"
        "            on_loop.append(threading.current_thread() is threading.main_thread())\n"
        "sys.meta_path.insert(0, Spy())\n"
        "async def main():\n"
        "    local = LocalMedia(loopback_only=True)\n"
        "    host = MediaHost(lambda call_id, record: local.make(record))\n"
        "    await host.handle('media.take', 'c1', {'record': None})\n"
        "    assert list(host.sessions) == ['c1']\n"
        "    await host.handle('media.close', 'c1', {})\n"
        "asyncio.run(main())\n"
        "print(on_loop)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["[False]"], result.stdout


async def test_delegates_of_a_call_run_in_the_order_they_came(host: MediaHost) -> None:
    """serve() answers each delegate once, in order per call, errors as results."""
    replies: list[Any] = []
    done = asyncio.Event()

    def reply(value: Any, error: BaseException | None) -> None:
        replies.append(type(error).__name__ if error else value)
        if len(replies) == 5:
            done.set()

    host.serve("media.take", "c1", {"record": None}, reply)
    host.serve("media.offer", "c1", {"direction": "sendonly", "renew": True}, reply)
    host.serve("media.update", "c1", {"muted": True, "dtmf": {"digits": "12"}}, reply)
    host.serve("media.update", "c1", {"bogus": 1}, reply)
    host.serve("media.apply_answer", "c1", {"answer": SDP_ANSWER}, reply)
    await asyncio.wait_for(done.wait(), 5)
    assert replies == [{}, {"sdp": SDP_OFFER}, {}, "GroupProtocolError", {}]
    assert host.log == [("direction", "sendonly"), ("offer", True), "mute",  # type: ignore[attr-defined]
                        ("dtmf", "12", 0.1, 0.07), "apply"]


# -- the real's side ---------------------------------------------------------------------------


class Plane:
    """The group as RemoteMedia sees it: records delegates, answers from a script."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, BaseException] = {}
        self.counters = {"frames_received": 0, "dtmf_received": 0}

    async def __call__(self, to: str, op: str, call_id: str, args: dict[str, Any],
                       timeout: float = 10.0) -> Any:
        self.sent.append((op, args))
        await asyncio.sleep(0)
        if op in self.fail:
            raise self.fail[op]
        if args.get("counters"):
            return dict(self.counters)
        return {"media.offer": {"sdp": SDP_OFFER}, "media.answer": {"sdp": SDP_ANSWER}}.get(
            op, {})


async def test_remote_media_keeps_the_call_layers_order_take_first() -> None:
    """Sync changes made before an offer reach the holder before it, after the take."""
    plane = Plane()
    media = RemoteMedia(plane, "b", "c1")
    media.set_direction("sendonly")
    media.mute()
    assert await media.create_offer() == SDP_OFFER
    assert [op for op, _ in plane.sent] == ["media.take", "media.update", "media.update",
                                            "media.offer"]
    assert plane.sent[0][1] == {"record": None}
    assert plane.sent[3][1] == {"renew": False, "ice_restart": False, "direction": "sendonly"}
    assert media.muted and media.direction == "sendonly" and media.origin_version == 7
    with pytest.raises(MediaError, match="invalid media direction 'up'"):
        media.set_direction("up")


async def test_remote_media_builds_the_continuity_record_from_relayed_sdp() -> None:
    """No record before a completed exchange; after it, MediaSession.continuity()'s fields."""
    media = RemoteMedia(Plane(), "b", "c1")
    with pytest.raises(MediaError, match="no continuity record"):
        media.continuity()
    await media.create_answer(SDP_OFFER)
    record = media.continuity()
    assert record["local_sdp"] == SDP_ANSWER and record["remote_sdp"] == SDP_OFFER
    assert (record["session_id"], record["origin_version"]) == ("99", 3)
    assert record["dtmf_payload_type"] == 126 and record["direction"] == "sendrecv"
    assert media.negotiated_direction == "sendrecv" and media.stats is None
    resumed = RemoteMedia(Plane(), "c", "c1", record=record)  # the next holder starts from it
    assert resumed.continuity()["local_sdp"] == SDP_ANSWER
    # RFC 3264 §8: the versions the resuming holder may send are claimed in the record it
    # publishes; a holder that holds the media already (an adopted call) resumes nothing
    assert resumed.continuity()["versions_used"] == 3 + 2 * RESUME_GAP
    held = RemoteMedia(Plane(), "c", "c1", record=record, held=True)
    assert "versions_used" not in held.continuity()


async def test_remote_media_maps_the_holders_errors_and_reports_its_loss_once() -> None:
    """A holder's MediaError comes back as one; MemberLostError calls on_lost once."""
    plane = Plane()
    lost: list[RemoteMedia] = []
    media = RemoteMedia(plane, "b", "c1", on_lost=lost.append)
    plane.fail["media.answer"] = WebPhoneError("MediaError: the SDP offer has no m=audio")
    with pytest.raises(MediaError, match="no m=audio"):
        await media.create_answer(SDP_OFFER)
    plane.fail["media.update"] = WebPhoneError("DtmfNotAvailableError: no telephone-event")
    with pytest.raises(DtmfNotAvailableError):
        await media.send_dtmf("1")
    plane.fail["media.offer"] = MemberLostError("member b is gone")
    for _ in range(2):
        with pytest.raises(MemberLostError):
            await media.create_offer()
    assert lost == [media] and media.lost
    await media.close()  # nothing sent to a lost holder
    assert plane.sent[-1][0] == "media.offer" and media.closed
    with pytest.raises(MediaError, match="closed"):
        await media.create_offer()


async def test_a_first_audio_wait_does_not_hold_back_the_next_offer_answer() -> None:
    """While the real waits for the holder to hear the far party, the far party's re-offer
    (what ends that wait) is relayed at once: the wait is not in the call's queue."""
    plane = Plane()
    heard = asyncio.Event()
    answer = plane.__call__

    async def call(to: str, op: str, call_id: str, args: dict[str, Any],
                   timeout: float = 10.0) -> Any:
        if "wait_first_audio" in args:
            await heard.wait()
            return {"after": 0.25}
        return await answer(to, op, call_id, args, timeout)

    media = RemoteMedia(call, "b", "c1")  # type: ignore[arg-type]
    await media.take()
    waiting = asyncio.ensure_future(media.wait_first_audio(1.0))
    assert await asyncio.wait_for(media.create_answer(SDP_OFFER), 1) == SDP_ANSWER
    assert not waiting.done()
    heard.set()
    assert await waiting > 0


async def test_remote_media_reports_the_holders_counters_a_read_late() -> None:
    """stats: the holder's receive counters as last reported; each read asks for a new report
    (one at a time), so the call layer's RTP inactivity check works for remote media."""
    plane = Plane()
    media = RemoteMedia(plane, "b", "c1")
    assert media.stats is None and plane.sent == []  # nothing taken: nothing asked
    await media.take()
    plane.counters = {"frames_received": 50, "dtmf_received": 1}
    await wait_until(lambda: media.stats is not None, 2)
    assert media.stats is not None
    assert (media.stats.frames_received, media.stats.dtmf_received) == (50, 1)
    plane.counters = {"frames_received": 75, "dtmf_received": 1}
    await wait_until(lambda: media.stats is not None and media.stats.frames_received == 75, 2)
    asks = [a for op, a in plane.sent if a.get("counters")]
    assert asks and all(a == {"counters": True} for a in asks)
    plane.counters = {"frames_received": -1, "dtmf_received": 1}  # a bad report changes nothing
    # one report at a time: once two more were asked for, the first of them was applied
    await wait_until(lambda: media.stats is not None and len(
        [a for _, a in plane.sent if a.get("counters")]) > len(asks) + 1, 2)
    assert media.stats is not None and media.stats.frames_received == 75


async def test_a_session_action_during_a_media_move_runs_once_the_move_is_done() -> None:
    """The runner waits for the call's media move before it runs the dummy's action (item 7:
    actions during a takeover queue); "answer" and "call" name their taker if it is live."""
    moved, waiting = asyncio.Event(), asyncio.Event()
    ran: list[str] = []

    class Mover:
        def taking(self, holder: str | None) -> Any:
            ran.append(f"taking {holder}")
            return contextlib.nullcontext()

        async def release(self, holder: str) -> dict[str, Any]:
            return {}

        async def live(self, holder: str) -> str | None:
            return holder if holder == "alive" else None

        def moving(self, call_id: str) -> bool:
            return True

        async def settled(self, call_id: str) -> None:
            waiting.set()
            await moved.wait()
            ran.append(f"settled {call_id}")

    class Session:
        call_id = "c1"

        async def hold(self) -> None:
            ran.append("hold")

        async def answer(self) -> None:
            ran.append("answer")

    phone = SimpleNamespace(call_sessions=[Session()])
    holding = asyncio.ensure_future(run_action(
        phone, {}, Action("a1", "hold", "c1", {}, 5), Mover()))  # type: ignore[arg-type]
    await asyncio.wait_for(waiting.wait(), 1)  # the runner waits for the move ...
    assert ran == [] and not holding.done()  # ... and has run nothing yet
    moved.set()
    await holding
    assert ran == ["settled c1", "hold"]
    ran.clear()
    for holder in ("alive", "dead"):
        await run_action(phone, {}, Action("a2", "answer", "c1", {"holder": holder}, 5),  # type: ignore[arg-type]
                         Mover())
    assert ran == ["taking alive", "settled c1", "answer", "taking None", "settled c1", "answer"]
