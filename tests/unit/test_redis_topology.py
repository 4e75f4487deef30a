"""Hub URLs of the Redis transport (webphone.shared.transports.redis_topology): one server,
Sentinel and Cluster forms, the acknowledgement default of each, and errors that name what is
wrong (never showing the password); `--hub` on the command line is checked the same way."""

from __future__ import annotations

import argparse

import pytest

from webphone.cli._common import hub_arg
from webphone.shared.group import validate_hub
from webphone.shared.transports.base import GroupTransportError
from webphone.shared.transports.redis import RedisTransport
from webphone.shared.transports.redis_topology import parse_hub_url, redact


def test_one_server_urls_keep_redis_py_syntax_and_wait_for_nobody() -> None:
    t = parse_hub_url("redis://u:p@h:7/2?socket_timeout=3")
    assert (t.kind, t.replica_acks, t.url) == ("server", 0, "redis://u:p@h:7/2?socket_timeout=3")
    t = parse_hub_url("redis://h:7/0?replica_acks=1")
    assert t.replica_acks == 1 and t.url == "redis://h:7/0"  # our option is not redis-py's
    assert parse_hub_url("unix:///tmp/redis.sock").url == "unix:///tmp/redis.sock"
    assert parse_hub_url("rediss://h/0").kind == "server"


def test_sentinel_urls() -> None:
    t = parse_hub_url("redis+sentinel://me:s%40cret@10.0.0.1:26380,s2,[::1]:26381/main"
                      "?db=3&sentinel_password=sp")
    assert t.kind == "sentinel" and t.service == "main" and t.db == 3
    assert t.hosts == (("10.0.0.1", 26380), ("s2", 26379), ("::1", 26381))
    assert (t.username, t.password, t.sentinel_password) == ("me", "s@cret", "sp")
    assert t.replica_acks == 1 and not t.tls  # a failover happens: wait for one replica
    assert t.node_url("10.0.0.9", 6379) == "redis://me:s%40cret@10.0.0.9:6379/3"
    assert t.node_url("::2", 6379) == "redis://me:s%40cret@[::2]:6379/3"
    tls = parse_hub_url("rediss+sentinel://s1/main?replica_acks=0")
    assert tls.tls and tls.replica_acks == 0 and tls.node_url("n", 1) == "rediss://n:1/0"


def test_cluster_urls() -> None:
    t = parse_hub_url("redis+cluster://n1:7000,n2:7001")
    assert t.kind == "cluster" and t.hosts == (("n1", 7000), ("n2", 7001))
    assert t.replica_acks == 1 and t.db == 0
    assert parse_hub_url("redis+cluster://n1/").hosts == (("n1", 6379),)
    assert parse_hub_url("REDIS+CLUSTER://n1:7000/0?replica_acks=2").replica_acks == 2


@pytest.mark.parametrize(("url", "says"), [
    ("http://h", "the scheme must be one of"),
    ("redis+sentinel://h:x/m", "the port of sentinel 1 ('h:x') is not a number"),
    ("redis+sentinel://h:1,h:70000/m", "the port of sentinel 2"),
    ("redis+sentinel://h:1", "name the Sentinel service"),
    ("redis+sentinel://h:1/a/b", "name the Sentinel service"),
    ("redis+sentinel:///m", "no sentinel host"),
    ("redis+sentinel://:1/m", "sentinel 1 (':1') has no host"),
    ("redis+sentinel://h/m?db=x", "db='x' is not a whole number"),
    ("redis+sentinel://h/m?retries=3", "unknown option 'retries' (known: db, replica_acks"),
    ("redis+cluster://h:1/3", "a Redis Cluster has only db 0"),
    ("redis+cluster://h:1?db=1", "unknown option 'db'"),
    ("redis+cluster://,", "no cluster node host"),
    ("redis://h?replica_acks=-1", "replica_acks='-1' is not a whole number"),
    ("redis://h:notaport/0", "hub URL 'redis://h:notaport/0'"),
])
def test_malformed_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_hub_url(url)
    assert says in str(info.value)
    with pytest.raises(GroupTransportError):
        RedisTransport(url)
    with pytest.raises(argparse.ArgumentTypeError):
        hub_arg(url)


def test_passwords_never_appear_in_errors() -> None:
    assert redact("redis+cluster://u:secret@h:1,h:2") == "redis+cluster://u:***@h:1,h:2"
    assert redact("redis://h/0") == "redis://h/0"
    with pytest.raises(ValueError) as info:
        parse_hub_url("redis+sentinel://u:secret@h:x/m")
    assert "secret" not in str(info.value) and "u:***@" in str(info.value)


def test_validate_hub_for_command_lines() -> None:
    assert validate_hub("local") == "local"
    assert validate_hub("redis+cluster://h:1") == "redis+cluster://h:1"
    with pytest.raises(ValueError, match="expected \"local\" or a Redis URL"):
        validate_hub("lokal")


def test_transport_takes_the_url_rule_or_an_explicit_one() -> None:
    assert RedisTransport("redis+sentinel://h/m").replica_acks == 1
    assert RedisTransport("redis+sentinel://h/m", replica_acks=0).replica_acks == 0
    assert RedisTransport("redis://h/0").replica_acks == 0
    with pytest.raises(GroupTransportError, match="replica_acks must be >= 0"):
        RedisTransport("redis://h/0", replica_acks=-1)
