"""Input at the command's boundaries: options, sipInfo files, command lines (issue 13 items 3,
5 and 14), with hypothesis fuzzing of each: no exception but the documented ones, each call
bounded in time."""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webphone.cli import build_parser, main
from webphone.cli._common import UsageError, _sip_info_from
from webphone.cli.phone_app import MAX_COMMAND_CHARS, parse_command, split_words
from webphone.errors import GroupProtocolError, SipInfoError
from webphone.shared.coordinator import Coordinator
from webphone.shared.protocol import MAX_FRAME_BYTES, decode_frame
from webphone.sip_info import SipInfo

INFO = {"username": "101", "password": "pw", "domain": "d", "outboundProxy": "127.0.0.1:5066",
        "transport": "WS"}


def test_hub_must_be_local_or_a_redis_url(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    """`--hub bogus` is a usage error naming the option (was a ValueError traceback)."""
    (tmp_path / "s.json").write_text(json.dumps(INFO))
    assert main(["phone", "--sip-info", str(tmp_path / "s.json"), "--hub", "bogus"]) == 2
    assert "argument --hub: 'bogus': expected \"local\" or a Redis URL" in capsys.readouterr().err


def test_a_binary_sip_info_file_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    """A binary file: exit 2 and one line (was UnicodeDecodeError)."""
    (tmp_path / "s.json").write_bytes(b"\xff\xfe\x00\x01")
    assert main(["status", "--sip-info", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a sipInfo JSON file: not UTF-8" in err


def test_an_out_of_range_port_is_refused_with_the_json_key() -> None:
    """`outboundProxy: 127.0.0.1:99999` fails validation naming the JSON key, not the field."""
    with pytest.raises(SipInfoError, match="'outboundProxy' must be 'host:port' \\(port 1-65535"):
        SipInfo.from_dict({**INFO, "outboundProxy": "127.0.0.1:99999"})
    with pytest.raises(SipInfoError, match="'outboundProxy' must be a non-empty string"):
        SipInfo.from_dict({**INFO, "outboundProxy": ""})


def test_help_texts_say_what_is_true() -> None:
    """The demo takes ~3 s; the sandbox's help has examples."""
    assert "~3 seconds" in build_parser().format_help()
    from webphone.sandbox.cli import _serve_parser

    assert "examples:\n  webphone sandbox --port 5066" in _serve_parser().format_help()


def test_command_lines_split_like_a_shell() -> None:
    """Quotes and escapes as in POSIX shells; the name is lowercased, aliases resolved."""
    line = """dtmf '1 2' "a\\"b" c\\ d"""
    assert split_words(line) == shlex.split(line)
    assert parse_command("BYE 2") == ("hangup", ["2"])
    with pytest.raises(UsageError, match="no closing quotation"):
        parse_command("call '101")
    with pytest.raises(UsageError, match=f"longer than the {MAX_COMMAND_CHARS} taken"):
        parse_command("call " + "1" * MAX_COMMAND_CHARS)


def test_splitting_is_linear_not_quadratic() -> None:
    """A line of many quoted words (shlex took 34 s on 1 MB) splits in one pass."""
    line = "'x " * 300_001
    with pytest.raises(UsageError):
        split_words(line)  # unterminated: the whole line is read once
    assert len(split_words("'x' " * 300_000)) == 300_000


# Each input's CPU time (thread_time) is bounded, not its wall time: a quadratic parse shows in
# both, a process that a busy machine leaves waiting only in the wall clock.
@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.text(alphabet=" '\"\\ab", max_size=200))
def test_fuzz_command_lines(line: str) -> None:
    """Any line: (name, args) or UsageError; quoting agrees with shlex where shlex accepts."""
    started = time.thread_time()
    try:
        name, args = parse_command(line)
    except UsageError:
        return
    finally:
        assert time.thread_time() - started < 0.5
    assert name == name.lower() and all(isinstance(a, str) for a in args)
    if any(c.isspace() and c not in " \t\r\n" for c in line):
        return  # other Unicode spaces separate words here, not in shlex
    try:
        expected = shlex.split(line)
    except ValueError:
        return
    assert len(expected) == len(args) + 1


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                   max_size=6),
    max_leaves=20)
_SIP_INFO_KEYS = ["username", "password", "authorizationId", "domain", "outboundProxy",
                  "outboundProxyBackup", "transport", "stunServers", "sipInfo"]


@settings(max_examples=200, deadline=None)
@given(_JSON | st.dictionaries(st.sampled_from(_SIP_INFO_KEYS), _JSON | st.text(max_size=40)))
def test_fuzz_sip_info_json(data: Any) -> None:
    """Any JSON as a sipInfo: a SipInfo or a UsageError naming the problem, never another."""
    started = time.thread_time()
    try:
        info = _sip_info_from(data, "f.json")
    except UsageError as exc:
        assert str(exc).startswith("f.json: ")
    else:
        assert isinstance(info, SipInfo) and info.transport in ("WS", "WSS")
    assert time.thread_time() - started < 0.5


_FRAME = st.one_of(
    st.binary(max_size=300),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"v": st.just(1), "type": st.sampled_from(
        ["hello", "heartbeat", "action", "snapshot", "action_result", "registered", "leave",
         "members_query", "welcome"])}, optional={
        "member_id": _JSON, "pid": _JSON, "host": _JSON, "group": st.just("g") | _JSON,
        "started_at": _JSON, "protocol": _JSON, "epoch": _JSON, "real": _JSON,
        "action_id": _JSON, "name": _JSON, "call_id": _JSON, "args": _JSON, "timeout": _JSON,
        "state": _JSON, "seq": _JSON, "ok": _JSON, "value": _JSON,
    }).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_FRAME, min_size=1, max_size=4))
def test_fuzz_hub_frames(frames: list[bytes]) -> None:
    """Any bytes from a member: decoded or GroupProtocolError; the coordinator never raises and
    at most closes that connection."""
    coordinator = Coordinator("g", now=0.0)
    coordinator.connection_made("c1", 0.0)
    for i, data in enumerate(frames):
        started = time.thread_time()
        assert len(data) <= MAX_FRAME_BYTES
        with contextlib.suppress(GroupProtocolError):
            decode_frame(data)
        coordinator.data_received("c1", data, float(i))
        assert time.thread_time() - started < 0.5
