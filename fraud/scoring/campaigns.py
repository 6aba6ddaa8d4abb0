"""Campaigns: near-duplicates of one message reaching many recipients within a window.

The feedback processor sees every decision (it reads the scores topic), so it is the one
place with the whole picture: each suspicious message (score >= `min_score`) joins the
active campaign whose first message it is most similar to (cosine >= `similarity`, last
member within `window_s`), or starts a new one. A campaign is reported once it has reached
`min_recipients` distinct recipients. When an analyst confirms one member as fraud, the
members that were let through are the ones to look at again (retroactive alerts).

Memory is bounded: the campaigns' first-message vectors are the rows of one matrix of
`max_campaigns` rows, allocated once (a closed campaign's row is reused), which each
message is compared against in one product; each campaign remembers at most
`max_members` members and as many distinct recipients; and the tracker's accounting
(`memory_bytes`) stays under `max_memory_bytes`, the least recently active campaigns
closing first.

Pure Python and numpy: the Kafka side is workers/feedback/processor.py.
"""

import heapq
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from fraud.config import CampaignSettings

_CAMPAIGN_NAMESPACE = uuid.UUID("8f6b2d4e-1c3a-4b7e-9d2f-5a6c7e8b9d01")
# What a campaign, a member and a remembered recipient cost beyond the vector matrix, in
# bytes: measured with tracemalloc on CPython 3.11 (a campaign 1243: its dataclass, deque,
# set and index entries; a member 313: its dataclass, ids, slots in the deque and in the
# message index; a recipient 53: a set slot, its string being the member's), rounded up
# (tests/fraud/scoring/test_campaigns.py checks the accounting against tracemalloc).
CAMPAIGN_OVERHEAD_BYTES = 1300
MEMBER_OVERHEAD_BYTES = 340
RECIPIENT_OVERHEAD_BYTES = 60


@dataclass
class Member:
    message_id: str
    recipient: str | None
    score: float
    is_alert: bool
    at_ms: int


@dataclass
class Campaign:
    campaign_id: str
    slot: int  # its first message's vector: row `slot` of the tracker's matrix
    category: str | None
    first_seen_ms: int
    last_seen_ms: int
    members: deque[Member] = field(default_factory=deque)
    size: int = 0  # every member ever, beyond those remembered
    recipients: set[str] = field(default_factory=set)  # distinct, up to max_members
    confirmed_by: str | None = None  # the message an analyst confirmed as fraud

    def let_through(self) -> list[Member]:
        return [m for m in self.members if not m.is_alert]

    def record(self) -> dict:
        """The campaigns topic's value for this campaign (no message text)."""
        return {
            "campaign_id": self.campaign_id,
            "category": self.category,
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            "size": self.size,
            "recipients": len(self.recipients),
            "alerts": sum(m.is_alert for m in self.members),
            "confirmed_by": self.confirmed_by,
            "members": [m.message_id for m in self.members],
        }


class CampaignTracker:
    def __init__(self, settings: CampaignSettings) -> None:
        self.settings = settings
        # Least recently active first: the order in which idle campaigns are closed.
        self.campaigns: OrderedDict[str, Campaign] = OrderedDict()
        self.of_message: dict[str, str] = {}
        self._vectors: np.ndarray | None = None  # (max_campaigns, dim), at the first vector
        self._active = np.zeros(settings.max_campaigns, bool)
        self._at_slot: list[Campaign | None] = [None] * settings.max_campaigns
        self._free: list[int] = []  # rows freed by closed campaigns (a heap: lowest first)
        self._rows_used = 0  # rows 0.._rows_used-1 have held a campaign
        self._members = 0
        self._recipients = 0
        self.closed = 0

    def observe(
        self,
        member: Member,
        vector: np.ndarray,
        category: str | None,
    ) -> Campaign | None:
        """Place one decided message; returns its campaign (None below min_score)."""
        s = self.settings
        if member.score < s.min_score:
            return None
        if member.message_id in self.of_message:  # a replayed decision
            return self.campaigns.get(self.of_message[member.message_id])
        self._close_idle(member.at_ms)
        campaign = self._nearest(vector)
        if campaign is None:
            campaign = self._open(member, vector, category)
        self.campaigns.move_to_end(campaign.campaign_id)
        campaign.members.append(member)
        self._members += 1
        if len(campaign.members) > s.max_members:
            gone = campaign.members.popleft()
            self.of_message.pop(gone.message_id, None)
            self._members -= 1
        campaign.size += 1
        campaign.last_seen_ms = max(campaign.last_seen_ms, member.at_ms)
        recipients = campaign.recipients
        if member.recipient and len(recipients) < s.max_members:
            before = len(recipients)
            recipients.add(member.recipient)
            self._recipients += len(recipients) - before
        if campaign.category is None:
            campaign.category = category
        self.of_message[member.message_id] = campaign.campaign_id
        while self.memory_bytes() > s.max_memory_bytes and len(self.campaigns) > 1:
            self._close(next(iter(self.campaigns.values())))
        return campaign

    def reported(self, campaign: Campaign) -> bool:
        return len(campaign.recipients) >= self.settings.min_recipients

    def campaign_of(self, message_id: str) -> Campaign | None:
        cid = self.of_message.get(message_id)
        return None if cid is None else self.campaigns.get(cid)

    def memory_bytes(self) -> int:
        """The tracker's accounting: the vector matrix (all of it, once allocated) plus the
        measured cost of each campaign, member and remembered recipient."""
        matrix = 0 if self._vectors is None else self._vectors.nbytes
        return (
            matrix
            + CAMPAIGN_OVERHEAD_BYTES * len(self.campaigns)
            + MEMBER_OVERHEAD_BYTES * self._members
            + RECIPIENT_OVERHEAD_BYTES * self._recipients
        )

    def _open(self, member: Member, vector: np.ndarray, category: str | None) -> Campaign:
        """A new campaign starting with `member`, in a free row of the matrix (the least
        recently active campaign is closed first when every row is taken)."""
        if len(self.campaigns) >= self.settings.max_campaigns:
            self._close(next(iter(self.campaigns.values())))
        vectors = self._matrix(len(vector))
        slot = heapq.heappop(self._free) if self._free else self._rows_used
        self._rows_used = max(self._rows_used, slot + 1)
        vectors[slot] = vector
        self._active[slot] = True
        cid = "c-" + uuid.uuid5(_CAMPAIGN_NAMESPACE, member.message_id).hex[:16]
        campaign = Campaign(cid, slot, category, member.at_ms, 0)
        self.campaigns[cid] = self._at_slot[slot] = campaign
        return campaign

    def _matrix(self, dim: int) -> np.ndarray:
        if self._vectors is None:
            rows = self.settings.max_campaigns
            if rows * dim * 4 >= self.settings.max_memory_bytes:
                raise ValueError(
                    f"campaign vectors alone ({rows} x {dim} float32) fill max_memory_bytes "
                    f"({self.settings.max_memory_bytes}): raise FRAUD_CAMPAIGNS__MAX_MEMORY_BYTES "
                    "or lower FRAUD_CAMPAIGNS__MAX_CAMPAIGNS"
                )
            self._vectors = np.zeros((rows, dim), np.float32)
        return self._vectors

    def _nearest(self, vector: np.ndarray) -> Campaign | None:
        """The active campaign whose first message is most similar to `vector`, if close
        enough: one product against the rows in use, closed rows masked out."""
        if not self.campaigns or self._vectors is None:
            return None
        n = self._rows_used
        sims = self._vectors[:n] @ np.asarray(vector, np.float32)
        sims[~self._active[:n]] = -np.inf
        best = int(np.argmax(sims))
        return self._at_slot[best] if sims[best] >= self.settings.similarity else None

    def _close_idle(self, now_ms: int) -> None:
        """Close the campaigns idle for longer than the window, least recently active
        first (those are at the front)."""
        horizon = now_ms - self.settings.window_s * 1000
        while self.campaigns:
            oldest = next(iter(self.campaigns.values()))
            if oldest.last_seen_ms >= horizon:
                return
            self._close(oldest)

    def _close(self, campaign: Campaign) -> None:
        del self.campaigns[campaign.campaign_id]
        self._active[campaign.slot] = False
        self._at_slot[campaign.slot] = None
        heapq.heappush(self._free, campaign.slot)
        for m in campaign.members:
            self.of_message.pop(m.message_id, None)
        self._members -= len(campaign.members)
        self._recipients -= len(campaign.recipients)
        self.closed += 1
