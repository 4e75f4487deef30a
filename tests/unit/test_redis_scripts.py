"""The pure side of the Redis transport: key layout (one cluster slot per group), ids, script
answers, member listings; and the transport's URL and timing checks (no server needed)."""

from __future__ import annotations

import json
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from webphone.shared.lease import LeaseTimings
from webphone.shared.transports.base import GroupTransportError, HubOptions
from webphone.shared.transports.redis import RedisTransport
from webphone.shared.transports.redis_plane import PLANE_SCRIPTS
from webphone.shared.transports.redis_scripts import (
    _PRELUDE,
    ACTION_PUSH,
    INBOX_PUSH,
    SCRIPTS,
    GroupKeys,
    LeaseView,
    entry_key,
    is_gid,
    member_infos,
    push_entry,
    streams,
)


@pytest.mark.parametrize("group", ["101@sip.test", "x", "{weird}:group with spaces", "é" * 40])
def test_every_key_of_a_group_hashes_to_one_slot(group: str) -> None:
    keys = GroupKeys.for_group(group)
    names = [*keys.base(), keys.act("0" * 12 + ".a1"), keys.reply("0" * 12)]
    assert len({key_slot(n.encode()) for n in names}) == 1
    assert keys.prefix.startswith("webphone:{") and keys.prefix.endswith("}")
    assert GroupKeys.for_group(group + "!").prefix != keys.prefix


@pytest.mark.parametrize("namespace", ["", "a{b", "a}b", "a:b", "a b"])
def test_namespaces_that_would_break_the_hash_tag_are_refused(namespace: str) -> None:
    with pytest.raises(ValueError):
        GroupKeys.for_group("g", namespace)


def test_only_inboxes_of_the_group_are_accepted_as_reply_keys() -> None:
    keys, other = GroupKeys.for_group("g"), GroupKeys.for_group("h")
    assert keys.is_reply(keys.reply("0123456789ab"))
    assert not keys.is_reply(other.reply("0123456789ab"))
    assert not keys.is_reply(keys.lease)
    assert not keys.is_reply(keys.reply("0123456789ab") + "x")
    assert is_gid("0123456789ab.a17") and not is_gid("x.a1") and not is_gid("0123456789ab.")


def test_every_script_has_the_prelude_functions_it_calls_and_reads_the_server_clock() -> None:
    """Each script carries the prelude's constants and exactly the prelude functions it calls,
    directly or through another one (each is a closure made on every run); time is the
    server's (TIME, through now_ms), in every script that uses it."""
    assert {"join", "heartbeat", "acquire", "renew", "release", "ready", "handover", "leave",
            "members", "publish", "enqueue", "claim", "result", "expire",
            "interrupt"} == set(SCRIPTS)
    functions = set(re.findall(r"local function (\w+)\(", _PRELUDE))
    assert {"now_ms", "lease_get", "acquire", "push"} <= functions
    for name, text in {**SCRIPTS, **PLANE_SCRIPTS}.items():
        defined = set(re.findall(r"local function (\w+)\(", text))
        called = {f for f in functions if re.search(rf"(?<!function ){f}\(", text)}
        assert defined == called, name
        assert text.startswith(_PRELUDE[:_PRELUDE.index("local function")]), name
        assert ("now_ms()" in text) == ("redis.call('TIME')" in text), name
    assert "local function acquire(" in SCRIPTS["join"]
    assert "local function acquire(" not in SCRIPTS["enqueue"]


def test_lease_view_parses_script_answers() -> None:
    view = LeaseView.parse([b"m1", b"7", b"handing", b"1", b"2500", b"1700000000000",
                            b"1700000001000"])
    assert view == LeaseView("m1", 7, "handing", True, 2500, 1700000000000, 1700000001000)
    empty = LeaseView.parse([b"", b"3", b"", b"0", b"-2", b"0", b"5"])
    assert empty.holder is None and empty.epoch == 3 and empty.pttl_ms == -2


def test_streams_accepts_resp2_and_resp3_shapes() -> None:
    entries = [(b"1-0", {b"e": b"lease"})]
    assert streams(None) == [] and streams([]) == []
    assert streams([[b"s", entries]]) == [(b"s", entries)]
    assert streams({b"s": entries}) == [(b"s", entries)]


def test_member_infos_roles_times_and_malformed_entries() -> None:
    now_ms = 1_700_000_010_000
    lease = LeaseView("b", 4, "real", True, 2000, now_ms - 3000, now_ms)

    def info(member: str, joined_ago: float) -> bytes:
        return json.dumps({"id": member, "pid": 10, "host": f"h-{member}",
                           "joined": now_ms - int(joined_ago * 1000),
                           "since": now_ms - int(joined_ago * 1000)}).encode()

    infos = member_infos(lease, [info("b", 5), info("a", 9), b"not json", b'{"id": "x"}'])
    assert [(m.member_id, m.role, m.host) for m in infos] == [("a", "dummy", "h-a"),
                                                                ("b", "real", "h-b")]
    mono = time.monotonic()
    assert abs((mono - infos[0].joined_at) - 9) < 1  # ages from the server's clock
    assert abs((mono - infos[1].role_since) - 3) < 1  # the real: since it took the lease
    handing = member_infos(LeaseView("b", 4, "handing", True, 2000, now_ms, now_ms),
                           [info("b", 1)])
    assert handing[0].role == "handing_over"


def test_transport_checks_its_url_and_derives_timings() -> None:
    with pytest.raises(GroupTransportError):
        RedisTransport("http://example.org", HubOptions())
    t = RedisTransport("redis://127.0.0.1:1/0", HubOptions(heartbeat_timeout=1.5))
    assert t.timings == LeaseTimings.from_heartbeat_timeout(1.5)
    assert (t.timings.ttl, t.timings.renew_deadline) == (1.5, 1.0)
    custom = LeaseTimings(ttl=10, renew_interval=2, renew_deadline=6)
    assert RedisTransport("rediss://h:6380/2", timings=custom).timings is custom
    assert RedisTransport("unix:///tmp/redis.sock").name == "redis"


# -- pushed entries (the scripts' `push`: an entry id, then the fields, one a line) -----------

_field = st.binary(max_size=40).filter(lambda b: b"\n" not in b)


@given(ms=st.integers(0, 2**48), seq=st.integers(0, 2**32), fields=st.lists(_field, min_size=4,
       max_size=4), last=st.binary(max_size=200))
def test_a_pushed_entry_reads_back_as_its_stream_entry(ms: int, seq: int, fields: list[bytes],
                                                        last: bytes) -> None:
    """What ENQUEUE/RESULT publish (``id\\n`` + the fields joined by ``\\n``, the frame last,
    which may hold anything) gives the id and the non-empty fields, as XADD stored them."""
    data = f"{ms}-{seq}".encode() + b"\n" + b"\n".join([*fields, last])
    entry = push_entry(data, ACTION_PUSH)
    assert entry is not None
    assert entry[0] == f"{ms}-{seq}"
    assert entry[1] == {n: v for n, v in zip(ACTION_PUSH, [*fields, last], strict=True) if v}


@pytest.mark.parametrize("data", [b"", b"1-1", b"1-1\nt\ng\nn\nr", b"x-1\nt\ng\nn\nr\nd",
                                  b"1-1-1\nt\ng\nn\nr\nd", b"\n1-1\nt\ng\nn\nr\nd"])
def test_a_push_that_is_not_an_entry_is_refused(data: bytes) -> None:
    assert push_entry(data, INBOX_PUSH) is None


@given(st.tuples(st.integers(0, 2**48), st.integers(0, 2**32)),
       st.tuples(st.integers(0, 2**48), st.integers(0, 2**32)))
def test_entry_ids_order_like_the_stream(a: tuple[int, int], b: tuple[int, int]) -> None:
    """Not as strings: "10-0" comes after "9-5" (the pushes skip what the catch-up read)."""
    ka, kb = entry_key(f"{a[0]}-{a[1]}"), entry_key(f"{b[0]}-{b[1]}")
    assert (ka < kb) == (a < b) and (ka == kb) == (a == b)


def test_the_actions_channel_names_the_database() -> None:
    keys = GroupKeys.for_group("g")
    assert keys.actions_channel(0) != keys.actions_channel(1)
    assert keys.actions_channel(3).startswith(keys.prefix)
