"""What one member knows about its group, with the rules every member applies. Pure, no I/O.

`GroupMember` (the member side of every process) applies its role frames through
`MemberView.set_role`, and the simulated members of the tests through `apply`: one
implementation of these rules:

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

from dataclasses import dataclass
from typing import Any

from webphone.shared.protocol import Frame, Released, Role, RoleChange, Snapshot, Welcome

__all__ = ["MemberView", "RoleUpdate", "SnapshotView"]


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
            update = self.set_role(frame.role, frame.epoch, frame.real_id, force=True)
            return self.snapshots.offer(frame.snapshot) or (update is not None and update.changed)
        if isinstance(frame, RoleChange):
            update = self.set_role(frame.role, frame.epoch, frame.real_id)
            return update is not None and update.changed
        if isinstance(frame, Snapshot):
            return self.snapshots.offer(frame)
        if isinstance(frame, Released):
            self.released = frame
            return True
        return False

    def set_role(self, role: Role, epoch: int, real_id: str | None = None, *,
                 force: bool = False) -> RoleUpdate | None:
        """Take in a role frame: the one place the role rules live (`GroupMember` and `apply`
        both come here). None if it is stale (older than the known epoch; `force`, for a
        welcome, takes it anyway); else what changed."""
        if epoch < self.epoch and not force:
            return None  # older than what we know: stale
        update = RoleUpdate(old=self.role, new=role, old_epoch=self.epoch,
                            epoch=max(self.epoch, epoch),
                            changed=(self.role, self.epoch, self.real_id) != (
                                role, max(self.epoch, epoch), real_id))
        self.role, self.epoch, self.real_id = role, update.epoch, real_id
        return update


@dataclass(frozen=True, kw_only=True)
class RoleUpdate:
    """What one role frame did to a `MemberView`."""

    old: Role | None
    new: Role
    old_epoch: int
    epoch: int
    #: role, epoch or real id differ from before
    changed: bool

    @property
    def news(self) -> bool:
        """The member's owner must hear of it: a new role, or real at a new epoch (promoted
        again, or adopted by a restarted hub)."""
        return self.old != self.new or (self.new == "real" and self.epoch != self.old_epoch)
