"""A join that cannot succeed says why (issue 13 item 5): the transport's last error is in the
message instead of only "could not join group ... within N s"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from webphone.errors import WebPhoneError
from webphone.shared.member import GroupMember
from webphone.shared.transports.local import LocalTransport


class Listener:
    def on_role(self, old: str, new: str, epoch: int) -> None: ...
    def on_snapshot(self, snapshot: Any) -> None: ...
    def on_action(self, action: Any, token: Any) -> None: ...
    def on_released(self, released: Any) -> None: ...


async def test_an_unusable_runtime_dir_is_named_in_the_join_error(tmp_path: Path) -> None:
    """A runtime directory that cannot exist: the error carries the OS error."""
    transport = LocalTransport(runtime_dir=tmp_path / "file" / "dir")
    (tmp_path / "file").write_text("not a directory")
    member = GroupMember(transport, "g", Listener())
    with pytest.raises(WebPhoneError, match=r"within 0\.5 s \(last error: \w+Error: "):
        await member.start(timeout=0.5)
