"""A worker's state on Kafka: the reference bank it follows (bank.py) and the recipients'
histories it keeps (history.py)."""

from workers.state.bank import (
    BankFollower,
    BankWatch,
    FollowState,
    bank_is_empty,
    bank_link,
    end_offsets,
    publish_index,
    setup_index,
    snapshot,
    update_reference,
)
from workers.state.history import HistoryState, PartitionListener

__all__ = [
    "BankFollower",
    "BankWatch",
    "FollowState",
    "HistoryState",
    "PartitionListener",
    "bank_is_empty",
    "bank_link",
    "end_offsets",
    "publish_index",
    "setup_index",
    "snapshot",
    "update_reference",
]
