"""Campaigns: near-duplicates of one message reaching many recipients within a window.

The feedback processor sees every decision (it reads the scores topic), so it is the one
place with the whole picture: each suspicious message (score >= `min_score`) joins the
active campaign whose first message it is most similar to (cosine >= `similarity`, last
member within `window_s`), or starts a new one. A campaign is reported once it has reached
`min_recipients` distinct recipients. When an analyst confirms one member as fraud, the
members that were let through are the ones to look at again (retroactive alerts).

Pure Python and numpy: the Kafka side is workers/feedback.py.
"""

import uuid
from dataclasses import dataclass, field

import numpy as np

from fraud.config import CampaignSettings

_CAMPAIGN_NAMESPACE = uuid.UUID("8f6b2d4e-1c3a-4b7e-9d2f-5a6c7e8b9d01")


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
    vector: np.ndarray  # its first message's embedding
    category: str | None
    first_seen_ms: int
    last_seen_ms: int
    members: list[Member] = field(default_factory=list)
    size: int = 0  # every member ever, beyond those remembered
    recipients: set[str] = field(default_factory=set)
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
        self.campaigns: dict[str, Campaign] = {}
        self.of_message: dict[str, str] = {}

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
            cid = "c-" + uuid.uuid5(_CAMPAIGN_NAMESPACE, member.message_id).hex[:16]
            campaign = Campaign(cid, np.asarray(vector, np.float32), category, member.at_ms, 0)
            self.campaigns[cid] = campaign
            while len(self.campaigns) > s.max_campaigns:
                self._close(min(self.campaigns.values(), key=lambda c: c.last_seen_ms))
        campaign.members.append(member)
        if len(campaign.members) > s.max_members:
            gone = campaign.members.pop(0)
            self.of_message.pop(gone.message_id, None)
        campaign.size += 1
        campaign.last_seen_ms = max(campaign.last_seen_ms, member.at_ms)
        if member.recipient:
            campaign.recipients.add(member.recipient)
        if campaign.category is None:
            campaign.category = category
        self.of_message[member.message_id] = campaign.campaign_id
        return campaign

    def reported(self, campaign: Campaign) -> bool:
        return len(campaign.recipients) >= self.settings.min_recipients

    def campaign_of(self, message_id: str) -> Campaign | None:
        cid = self.of_message.get(message_id)
        return None if cid is None else self.campaigns.get(cid)

    def _nearest(self, vector: np.ndarray) -> Campaign | None:
        if not self.campaigns:
            return None
        campaigns = list(self.campaigns.values())
        sims = np.stack([c.vector for c in campaigns]) @ np.asarray(vector, np.float32)
        best = int(np.argmax(sims))
        return campaigns[best] if sims[best] >= self.settings.similarity else None

    def _close_idle(self, now_ms: int) -> None:
        horizon = now_ms - self.settings.window_s * 1000
        for campaign in [c for c in self.campaigns.values() if c.last_seen_ms < horizon]:
            self._close(campaign)

    def _close(self, campaign: Campaign) -> None:
        del self.campaigns[campaign.campaign_id]
        for m in campaign.members:
            self.of_message.pop(m.message_id, None)
