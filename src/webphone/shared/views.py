"""What one member knows about its group, with the rules every member applies. Pure, no I/O.

The member side (SharedWebPhone) and the tests share these rules:

* a snapshot is applied only if its (epoch, seq) is greater than the one applied before, so a
  late, duplicated or stale snapshot never rolls the view back;
* the epoch never goes backwards, and a role frame older than the known epoch is ignored;
* a member acts as the real (REGISTER, answer, run actions, publish) only while `may_act`; once
  it was told anything else at a newer epoch it never acts for the old epoch again;
* it unregisters only when `should_unregister`, and only after one more heartbeat round trip
  with the hub succeeded (the hub promotes nobody while it is connected); without a connection
  it never unregisters (the binding then expires by itself, which is the safe side).
"""

from __future__ import annotations

from typing import Any

from webphone.shared.protocol import Frame, Released, Role, RoleChange, Snapshot, Welcome

__all__ = ["MemberView", "SnapshotView"]


class SnapshotView:
    """The newest snapshot applied so far."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    @property
    def version(self) -> tuple[int, int] | None:
        """(epoch, seq) of the applied snapshot, or None before the first."""
        return self.snapshot.version if self.snapshot else None

    @property
    def state(self) -> dict[str, Any] | None:
        """The applied state, or None before the first snapshot."""
        return self.snapshot.state if self.snapshot else None

    def offer(self, snapshot: Snapshot | None) -> bool:
        """Apply `snapshot` if it is newer than what we have; return True if it was applied."""
        if snapshot is None:
            return False
        if self.snapshot is not None and snapshot.version <= self.snapshot.version:
            return False
        self.snapshot = snapshot
        return True


class MemberView:
    """A member's knowledge: role, group epoch, who is real, the snapshot, and the release."""

    def __init__(self) -> None:
        self.member_id: str | None = None
        self.role: Role | None = None
        self.epoch = 0
        self.real_id: str | None = None
        self.released: Released | None = None
        self.snapshots = SnapshotView()

    @property
    def may_act(self) -> bool:
        """True while this member is the real of the current epoch and not released."""
        return self.role == "real" and self.released is None

    @property
    def should_unregister(self) -> bool:
        """True if the hub released this member as the last real (see the module doc)."""
        return self.released is not None and self.released.unregister

    def apply(self, frame: Frame) -> bool:
        """Take in a frame from the hub; return True if the view changed. Other frame types
        (actions, results, heartbeats...) are not the view's business and return False."""
        if isinstance(frame, Welcome):
            self.member_id = frame.member_id
            changed = self._set_role(frame.role, frame.epoch, frame.real_id, force=True)
            return self.snapshots.offer(frame.snapshot) or changed
        if isinstance(frame, RoleChange):
            return self._set_role(frame.role, frame.epoch, frame.real_id)
        if isinstance(frame, Snapshot):
            return self.snapshots.offer(frame)
        if isinstance(frame, Released):
            self.released = frame
            return True
        return False

    def _set_role(self, role: Role, epoch: int, real_id: str | None, force: bool = False) -> bool:
        if epoch < self.epoch and not force:
            return False  # older than what we know: stale
        before = (self.role, self.epoch, self.real_id)
        self.role, self.epoch, self.real_id = role, max(self.epoch, epoch), real_id
        return before != (self.role, self.epoch, self.real_id)
