"""One SIP registration shared by many processes of one extension: the group ("shared") layer.

Pure cores: `protocol` (wire frames), `schema` (field and snapshot-state checks), `actions` (the
allow-list), `routing` (actions to their one outcome), `coordinator` (the state machine the hub
runs), `views` (the member-side rules).
"""

# The I/O side, imported lazily so that the hub process and pure-core users stay light:
# `hub` (the hub shell), `member` (a member's connection), `transports` (local, memory), `phone`.
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webphone.shared.phone import (
        ProxyCallSession,
        ProxyWarmTransfer,
        SharedWebPhone,
        group_name,
        group_status,
    )

__all__ = ["ProxyCallSession", "ProxyWarmTransfer", "SharedWebPhone", "group_name", "group_status"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from webphone.shared import phone

        return getattr(phone, name)
    raise AttributeError(f"module 'webphone.shared' has no attribute {name!r}")
