"""The scoring path: a message's keys (the bank's, its recipient's history), attention
over them, the assessment and the decision; campaigns; analysts' verdicts; one failing
input isolated from its batch."""

from fraud.scoring.campaigns import Campaign, CampaignTracker, Member
from fraud.scoring.detector import Detector, ScorerChoice, ScoreResult, effective_scorer
from fraud.scoring.explain import format_assessment
from fraud.scoring.head import HeadConfig, TrainedHead, load_head
from fraud.scoring.history import (
    Arrival,
    HistoryEntry,
    HistoryScorer,
    RecipientHistory,
    decode_state,
    encode_state,
)
from fraud.scoring.isolation import Failure, check_model, isolate, raised_at
from fraud.scoring.verdicts import (
    FEEDBACK_SOURCE,
    AnalystVerdict,
    parse_verdict,
    reference_id_for,
    verdict_reference,
)

__all__ = (
    "FEEDBACK_SOURCE",
    "AnalystVerdict",
    "Arrival",
    "Campaign",
    "CampaignTracker",
    "Detector",
    "Failure",
    "HeadConfig",
    "HistoryEntry",
    "HistoryScorer",
    "Member",
    "RecipientHistory",
    "ScoreResult",
    "ScorerChoice",
    "TrainedHead",
    "check_model",
    "decode_state",
    "effective_scorer",
    "encode_state",
    "format_assessment",
    "isolate",
    "load_head",
    "parse_verdict",
    "raised_at",
    "reference_id_for",
    "verdict_reference",
)
