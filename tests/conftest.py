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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from support.baresip import Baresip
from support.kamailio import Kamailio
from support.procs import log_tails_since
from support.redis_server import RedisServer
from support.sipp import SippResult, run_sipp, run_sipp_async

# -- hypothesis: no wall-clock limits -----------------------------------------------------------

# Hypothesis's default `deadline` (200 ms per example) and its too_slow health check time the
# machine, not the code: a process the scheduler leaves waiting for 0.3 s on a busy 2-core machine
# fails an example that takes 9 ms ("Unreliable test timings", test_dtmf's tone detector, reproduced
# by SIGSTOPping pytest for 0.3 s every 0.5 s). Speed is measured in benchmarks/, never asserted.
settings.register_profile("webphone", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("webphone")


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


# -- redis ---------------------------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server per test (about 30 ms): 127.0.0.1, free port, no persistence.

    `.url`, `.host`, `.port`, `.ping()`, `.stop()`, `.start()` (same port, empty data),
    `.restart()`, `.pause()`/`.resume()` (SIGSTOP/SIGCONT), `await .astart()/.astop()`.
    """
    require_binary("redis-server", "redis-server")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- baresip -------------------------------------------------------------------------------------

BaresipFactory = Callable[..., Awaitable[Baresip]]


@pytest.fixture
async def baresip(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BaresipFactory]:
    """Async factory of registered baresip peers (UDP) on a Kamailio.

    `bob = await baresip("bob")` -> started, `reginfo` OK. Keywords: `ice=True` (WebRTC-style
    medianat=ice + mediaenc=dtls_srtp, needed to call webphone), `answermode="auto"`,
    `register=False` (don't wait for OK), `kam=<Kamailio>` (default: the session `kamailio`
    fixture), anything else goes to `Baresip(...)`. The user's bindings are cleared before start
    and after stop; every peer is stopped at teardown.
    """
    require_binary("baresip", "baresip-core")
    made: list[tuple[Baresip, Kamailio]] = []

    async def factory(
        user: str = "bob",
        *,
        ice: bool = False,
        answermode: str = "manual",
        register: bool = True,
        kam: Kamailio | None = None,
        **kwargs: Any,
    ) -> Baresip:
        k = kam if kam is not None else request.getfixturevalue("kamailio")
        k.clear_bindings(user)
        bs = Baresip(
            tmp_path / f"baresip{len(made)}-{user}", user, k.password(user),
            registrar=k.sip_uri_host, domain=k.domain, ice=ice, answermode=answermode, **kwargs,
        )  # fmt: skip
        made.append((bs, k))
        await bs.start()
        if register:
            await bs.wait_registered()
        return bs

    try:
        yield factory
    finally:
        for bs, k in reversed(made):
            await bs.stop()
            if k.running and not k.paused:
                k.clear_bindings(bs.user)


# -- sipp ----------------------------------------------------------------------------------------


class SippRunner:
    """`sipp("invite_404.xml", "nobody")` runs a scenario against the session Kamailio's UDP
    port (or `target="127.0.0.1:PORT"`); `await sipp.arun(...)` runs it in a thread."""

    def __init__(self, request: pytest.FixtureRequest, workdir: Path) -> None:
        self._request = request
        self._workdir = workdir
        self._n = itertools.count()

    def _args(self, target: str | None, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if target is None:
            target = self._request.getfixturevalue("kamailio").sip_uri_host
        kwargs.setdefault("workdir", self._workdir / f"sipp{next(self._n)}")
        return target, kwargs

    def __call__(
        self, scenario: str, service: str, target: str | None = None, **kwargs: Any
    ) -> SippResult:
        target, kwargs = self._args(target, kwargs)
        return run_sipp(scenario, target, service=service, **kwargs)

    async def arun(
        self, scenario: str, service: str, target: str | None = None, **kwargs: Any
    ) -> SippResult:
        target, kwargs = self._args(target, kwargs)
        return await run_sipp_async(scenario, target, service=service, **kwargs)


@pytest.fixture
def sipp(request: pytest.FixtureRequest, tmp_path: Path) -> SippRunner:
    require_binary("sipp", "sip-tester")
    return SippRunner(request, tmp_path)


# -- one suite, two servers: Kamailio and the built-in sandbox -----------------------------------


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Any]:
    """Session-wide sandbox with the Kamailio adapter's interface (users 101..110, alice...)."""
    from support.sandbox_server import SandboxServer

    server = SandboxServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["kamailio", "sandbox"])
def sip_server(request: pytest.FixtureRequest) -> Any:
    """Kamailio, then the sandbox: a test using this runs against both, so the sandbox cannot
    drift from a real registrar on what they share."""
    name = "kamailio" if request.param == "kamailio" else "sandbox_server"
    return request.getfixturevalue(name)


@pytest.fixture
def server_user(sip_server: Any) -> Callable[[], str]:
    """Like `fresh_user`, for whichever server `sip_server` is."""

    def next_user() -> str:
        user = next(_fresh_cycle)
        sip_server.clear_bindings(user)
        return user

    return next_user


@pytest.fixture
def throwaway_server(sip_server: Any, tmp_path: os.PathLike[str]) -> Iterator[Any]:
    """A server of the same kind as `sip_server`, private to the test (to pause or restart)."""
    if isinstance(sip_server, Kamailio):
        server: Any = Kamailio(os.path.join(tmp_path, "kamailio-private"))
    else:
        from support.sandbox_server import SandboxServer

        server = SandboxServer()
    server.start()
    try:
        yield server
    finally:
        if getattr(server, "paused", False):
            server.resume()
        if isinstance(server, Kamailio):
            server.close()
        else:
            server.stop()
