"""Fixtures for system tests: group members as real OS processes (see support.group)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from support.group import MemberGroup, enable_subreaper, short_runtime_dir
from support.kamailio import Kamailio

GroupFactory = Callable[..., Awaitable[MemberGroup]]


@pytest.fixture(scope="session", autouse=True)
def _adopt_orphaned_hubs() -> None:
    enable_subreaper()


@pytest.fixture
async def member_group(
    kamailio: Kamailio, tmp_path: Path
) -> AsyncIterator[Callable[..., MemberGroup]]:
    """`member_group(user, kam=None, **options)` -> a `MemberGroup` (of the session Kamailio, or
    `kam`) in a fresh private runtime directory;
    at teardown every member is killed and reaped and the hubs are stopped."""
    made: list[tuple[MemberGroup, Path]] = []

    def factory(user: str, *, kam: Kamailio | None = None, **options: Any) -> MemberGroup:
        runtime_dir = short_runtime_dir()
        server = kam if kam is not None else kamailio
        group = MemberGroup(runtime_dir, tmp_path, server.sip_info(user), **options)
        made.append((group, runtime_dir))
        return group

    try:
        yield factory
    finally:
        for group, runtime_dir in made:
            await group.close()
            shutil.rmtree(runtime_dir, ignore_errors=True)
