"""The pure SIP user agent core (issue 10): what a whole call costs in CPU, beside the cost of
putting its messages on the wire.

* one call through `CallCore` (caller and callee in memory: INVITE, 180, 200, ACK, BYE, 200),
  every message serialised and parsed on the way, vs. the baseline: serialising and parsing the
  same six messages alone (what any SIP stack pays). Target: <= 20 ms of CPU per call, so one
  core keeps up with 50 call set-ups and tear-downs a second (a busy extension sees a few a
  minute); the ratio to the baseline is reported beside it. Most of the core's cost is header
  look-ups (`Headers` scans its fields per access) and re-parsing Via/CSeq/To per property.

Run: ``.venv/bin/python -m benchmarks sip_core``. Each figure is the median of 5 rounds of 200
calls (min/median/max of the 5 in `detail`); the load average is recorded beside it.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # support.sip_pair

from support.sip_pair import ANSWER, Pair, make_invite  # noqa: E402
from webphone.sip import SipRequest, SipResponse, parse_message  # noqa: E402

CALLS = 200
ROUNDS = 5


def _one_call() -> None:
    pair = Pair().call(make_invite())
    assert pair.uac is not None and pair.uas is not None
    pair.on_uas(pair.uas.ring(pair.now)).flush()
    pair.on_uas(pair.uas.answer(pair.now, ANSWER)).flush()
    pair.on_uac(pair.uac.hangup(pair.now)).flush()
    assert pair.trace == ["> INVITE", "< 180", "< 200", "> ACK", "> BYE", "< 200"], pair.trace


def _messages() -> list[SipRequest | SipResponse]:
    """The six messages of one call, captured once for the baseline."""
    captured: list[SipRequest | SipResponse] = []
    pair = Pair()
    original = pair._from_uac, pair._from_uas

    def tap(side: Any) -> Any:
        def wrapped(out: list[Any]) -> None:
            captured.extend(o.message for o in out if hasattr(o, "message"))
            side(out)
        return wrapped

    pair._from_uac, pair._from_uas = tap(original[0]), tap(original[1])
    pair.call(make_invite())
    assert pair.uac is not None and pair.uas is not None
    pair.on_uas(pair.uas.ring(pair.now)).flush()
    pair.on_uas(pair.uas.answer(pair.now, ANSWER)).flush()
    pair.on_uac(pair.uac.hangup(pair.now)).flush()
    return captured


def _round(job: Any) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        job()
    return (time.perf_counter() - start) / CALLS * 1e6  # microseconds per call


def run() -> list[dict[str, Any]]:
    """One row: a call through the core vs. the wire cost of its messages."""
    messages = _messages()
    assert len(messages) == 6, [type(m).__name__ for m in messages]

    def baseline() -> None:
        for message in messages:
            parse_message(bytes(message))

    _round(_one_call), _round(baseline)  # warm up
    core = [_round(_one_call) for _ in range(ROUNDS)]
    base = [_round(baseline) for _ in range(ROUNDS)]
    value, base_value = statistics.median(core), statistics.median(base)
    return [{
        "name": "one call through CallCore (6 messages)",
        "value": round(value, 1),
        "unit": "us",
        "baseline": "serialise + parse the same 6 messages",
        "baseline_value": round(base_value, 1),
        "target": "<= 20000 us (50 calls/s on one core)",
        "met": value <= 20000,
        "detail": {
            "core_min_median_max_us": [round(min(core), 1), round(value, 1), round(max(core), 1)],
            "baseline_min_median_max_us": [round(min(base), 1), round(base_value, 1),
                                           round(max(base), 1)],
            "calls_per_round": CALLS, "rounds": ROUNDS, "loadavg": os.getloadavg(),
            "ratio_to_baseline": round(value / base_value, 2),
        },
    }]
