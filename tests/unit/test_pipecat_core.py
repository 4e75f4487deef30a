"""The pure parts of the pipecat transport (`_core`): the playout clock that paces bot audio,
the user dict that travels with a call; and the import guard of the integration."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")  # as tests/conftest.py
try:
    from webphone.integrations.pipecat import PlayoutClock, UserData, UserDataError
except ImportError as exc:  # the extra is not installed
    if IN_CI:
        raise
    pytest.skip(str(exc), allow_module_level=True)

durations = st.floats(min_value=0.0, max_value=0.5, allow_nan=False)
gaps = st.floats(min_value=0.0, max_value=0.5, allow_nan=False)


@given(st.lists(st.tuples(gaps, durations), min_size=1, max_size=50),
       st.floats(min_value=0.0, max_value=0.2))
def test_a_writer_that_waits_as_told_stays_at_most_lead_ahead(
    steps: list[tuple[float, float]], lead: float
) -> None:
    """Waiting the returned delay after each write keeps the booked audio within `lead` of the
    clock (plus the chunk just written); a writer that falls behind restarts from now."""
    clock = PlayoutClock(lead)
    now = 0.0
    for gap, duration in steps:
        now += gap
        before = clock.booked_until
        delay = clock.schedule(now, duration)
        end = clock.booked_until
        assert end is not None
        assert delay >= 0
        expected_start = now if before is None or before < now else before
        assert end == pytest.approx(expected_start + duration)
        now += delay
        assert clock.remaining(now) <= lead + 1e-9 or delay == 0
        assert clock.remaining(now) <= max(lead, end - now) + 1e-9


def test_playout_clock_basics() -> None:
    """Real time pacing: 40 ms chunks with a 40 ms lead make the second write wait 40 ms."""
    clock = PlayoutClock(0.04)
    assert clock.schedule(10.0, 0.04) == 0.0
    assert clock.schedule(10.0, 0.04) == pytest.approx(0.04)
    assert clock.remaining(10.04) == pytest.approx(0.04)
    clock.reset()
    assert clock.booked_until is None and clock.remaining(11.0) == 0.0
    assert clock.schedule(20.0, 0.02) == 0.0  # after the booking ran out: from now
    with pytest.raises(ValueError, match="lead"):
        PlayoutClock(-1)
    with pytest.raises(ValueError, match="duration"):
        clock.schedule(0, -0.1)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=10,
)


@settings(max_examples=50)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=8))
def test_user_data_takes_plain_json_and_round_trips(data: dict[str, object]) -> None:
    """Any plain JSON value fits (within the limit), and the dict survives JSON unchanged."""
    user = UserData(data, limit=1 << 20)
    assert json.loads(user.to_json()) == json.loads(json.dumps(data))
    assert dict(user) == data


def test_user_data_refuses_what_could_not_travel_and_names_the_key() -> None:
    """Not JSON, not a str key, or over the size limit: refused where it is set."""
    user = UserData(limit=64)
    user["name"] = "Ann"
    with pytest.raises(UserDataError, match=r"user_data\['sock'\] is not plain JSON"):
        user["sock"] = object()
    with pytest.raises(UserDataError, match="keys must be str"):
        user[1] = "x"  # type: ignore[index]
    with pytest.raises(UserDataError, match=r"user_data\['notes'\] would make user_data \d+ "
                       "bytes as JSON; the limit is 64"):
        user["notes"] = "x" * 100
    with pytest.raises(UserDataError, match="not plain JSON"):
        user["nan"] = float("nan")
    assert dict(user) == {"name": "Ann"}
    del user["name"]
    assert len(user) == 0 and repr(user) == "UserData({})"


def test_importing_the_integration_without_pipecat_names_the_extra() -> None:
    """Without pipecat installed, the import fails with the pip command to run."""
    code = ("import sys; sys.modules['pipecat'] = None\n"
            "import webphone.integrations.pipecat")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "ImportError: webphone.integrations.pipecat needs pipecat" in result.stderr
    assert "pip install 'webphone[pipecat]'" in result.stderr
    plain = subprocess.run([sys.executable, "-c", "import webphone, sys; "
                            "print('pipecat' in sys.modules)"],
                           capture_output=True, text=True, timeout=60)
    assert plain.stdout.strip() == "False"  # import webphone never loads pipecat


def test_transport_params_are_a_phone_calls() -> None:
    """Audio in and out on, no end silence; stereo or a lead over 1 s is refused by name."""
    from pydantic import ValidationError

    from webphone.integrations.pipecat import WebPhoneParams

    params = WebPhoneParams()
    assert params.audio_in_enabled and params.audio_out_enabled
    assert params.audio_out_end_silence_secs == 0 and params.hangup_on_end
    with pytest.raises(ValidationError, match="phone audio is mono"):
        WebPhoneParams(audio_in_channels=2)
    with pytest.raises(ValidationError, match="audio_out_lead_secs must be within"):
        WebPhoneParams(audio_out_lead_secs=2.0)
    assert params.audio_in_max_pending == 10 and params.audio_in_max_frames == 50
    with pytest.raises(ValidationError, match=r"(?s)audio_in_max_pending.*at least 1, got 0"):
        WebPhoneParams(audio_in_max_pending=0)


async def test_inflow_holds_the_reader_at_the_bound_and_counts() -> None:
    """Frames pushed on and not yet processed by the next processor are pending; at the
    bound the reader waits (counted) until one is processed; frames not ours are ignored;
    reset() frees the reader when the input stops."""
    import asyncio

    from webphone.integrations.pipecat._inflow import AudioInflow
    from webphone.media import AudioStream

    inflow, stream = AudioInflow(2), AudioStream(max_frames=1)
    frames = [object(), object(), object()]
    inflow.sent(frames[0])
    await asyncio.wait_for(inflow.room(stream, "c"), 1)  # 1 < 2: no wait
    inflow.sent(frames[1])
    waiting = asyncio.ensure_future(inflow.room(stream, "c"))
    await asyncio.sleep(0)
    assert not waiting.done() and inflow.stats.waits == 1
    inflow.processed(object())  # another frame of the pipeline's: not counted
    await asyncio.sleep(0)
    assert not waiting.done()
    inflow.processed(frames[0])
    await asyncio.wait_for(waiting, 1)
    inflow.sent(frames[2])
    assert (inflow.stats.frames_in, inflow.stats.pending, inflow.stats.pending_max) == (3, 2, 2)
    waiting = asyncio.ensure_future(inflow.room(stream, "c"))
    await asyncio.sleep(0)
    inflow.reset()
    await asyncio.wait_for(waiting, 1)
    assert inflow.stats.pending == 0
    with pytest.raises(ValueError, match="max_pending must be >= 1, got 0"):
        AudioInflow(0)
