"""Shared fixtures: real Kamailio, redis-server, baresip and sipp on 127.0.0.1.

Helpers live in `tests/support/` (importable as `support.*`: this conftest's directory is on
sys.path). A missing binary skips the test with the apt package to install, except when the
environment has CI=true: then it FAILS, so CI cannot go green by skipping everything.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Callable, Iterator

import pytest

from support.kamailio import Kamailio
from support.procs import log_tails_since

# -- skip / fail when a tool is missing ----------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_binary(binary: str, apt_package: str) -> str:
    """Path of `binary`; skip the test if absent (pytest.fail under CI=true)."""
    path = shutil.which(binary)
    if path is None:
        reason = f"{binary!r} not found on PATH (apt-get install {apt_package})"
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return path


# -- log tails of managed processes on failure ---------------------------------------------------

_START = pytest.StashKey[float]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_START] = time.monotonic()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed:
        since = item.stash.get(_START, 0.0)
        for title, tail in log_tails_since(since):
            report.sections.append((title, tail))
    return report


# -- Kamailio ------------------------------------------------------------------------------------

FRESH_USERS = tuple(str(n) for n in range(101, 111))
_fresh_cycle = itertools.cycle(FRESH_USERS)


@pytest.fixture(scope="session")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    """Session-wide Kamailio (WS + UDP/TCP SIP, users from tests/support/kamailio.cfg).

    Bindings survive between tests: use `fresh_user()` (bindings cleared) or `clear_bindings`.
    """
    require_binary("kamailio", "kamailio kamailio-websocket-modules")
    require_binary("kamcmd", "kamailio")
    kam = Kamailio(tmp_path_factory.mktemp("kamailio"))
    kam.start()
    try:
        yield kam
    finally:
        kam.close()


@pytest.fixture
def fresh_user(kamailio: Kamailio) -> Callable[[], str]:
    """Call it to get the next user of 101..110 (round robin) with its bindings cleared.

    Password: kamailio.password(user) == "pw" + user; sipInfo: kamailio.sip_info(user).
    """

    def next_user() -> str:
        user = next(_fresh_cycle)
        kamailio.clear_bindings(user)
        return user

    return next_user


@pytest.fixture
def kamailio_proc(tmp_path: os.PathLike[str]) -> Iterator[Callable[..., Kamailio]]:
    """Factory for throw-away Kamailios (for SIGSTOP/kill/restart tests).

    `kam = kamailio_proc()` returns a STARTED Kamailio (`kamailio_proc(start=False)`: not
    started); `.stop()`, `.start()` (same ports), `.pause()` (SIGSTOP of all its processes),
    `.resume()`, `.restart()`, `await .astart()`, `await .astop()`. All stopped at teardown.
    """
    require_binary("kamailio", "kamailio kamailio-websocket-modules")
    require_binary("kamcmd", "kamailio")
    made: list[Kamailio] = []

    def factory(*, start: bool = True, **kwargs: object) -> Kamailio:
        kam = Kamailio(os.path.join(tmp_path, f"kamailio{len(made)}"), **kwargs)  # type: ignore[arg-type]
        made.append(kam)
        if start:
            kam.start()
        return kam

    try:
        yield factory
    finally:
        for kam in made:
            kam.close()
