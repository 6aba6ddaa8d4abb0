"""fraud: the scam-message detection library (no Kafka, no web framework, no CLI in here).

Text normalization (fraud.text), the sentence encoder (fraud.encoding), the FAISS reference
index (fraud.index), the scoring path (fraud.scoring), fitting the scorer (fraud.fitting)
and measuring it (fraud.quality), on top of the settings, errors, wire formats and metric
definitions named here. Importing it is light (no torch, no FAISS) and changes nothing
in the process: the thread settings torch and FAISS read at start-up are the entry
points' to set (workers/cli/main.py).
"""

from fraud.config import (
    CampaignSettings,
    HistorySettings,
    ScorerSettings,
    Settings,
)
from fraud.datasets import LabeledText, read_labeled_csv
from fraud.errors import (
    BrokerRefusedError,
    BrokerUnavailableError,
    ConfigError,
    DataError,
    FraudError,
    IndexMismatchError,
    ModelBrokenError,
    SchemaError,
)
from fraud.schemas import (
    Alert,
    Assessment,
    DeadLetterReason,
    Decision,
    Evidence,
    Message,
    parse_message,
)

__version__ = "0.1.0"

__all__ = (
    "Alert",
    "Assessment",
    "BrokerRefusedError",
    "BrokerUnavailableError",
    "CampaignSettings",
    "ConfigError",
    "DataError",
    "DeadLetterReason",
    "Decision",
    "Evidence",
    "FraudError",
    "HistorySettings",
    "IndexMismatchError",
    "LabeledText",
    "Message",
    "ModelBrokenError",
    "SchemaError",
    "ScorerSettings",
    "Settings",
    "__version__",
    "parse_message",
    "read_labeled_csv",
)
