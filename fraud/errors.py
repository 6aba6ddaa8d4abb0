"""One error hierarchy: every error the library raises on purpose derives from FraudError.

Each message says what was expected, what was found and what to do. (Wrong arguments from
code, such as an array of the wrong shape, raise TypeError or ValueError, as numpy and
faiss do.)
"""


class FraudError(Exception):
    """Base of every error this project raises on purpose.

    `retriable` tells a worker whether trying again could help (a broker that is
    briefly away) or whether it should stop (a wrong index, a bad file).
    """

    retriable = False


class ConfigError(FraudError):
    """A setting is missing or inconsistent."""


class DataError(FraudError):
    """An input file is missing, unreadable or malformed (a CSV without a text column...)."""


class IndexMismatchError(FraudError):
    """An index directory was built with another model, dimension or normalization."""


class SchemaError(FraudError):
    """A message could not be decoded; `reason` is a short fixed code for metrics and headers."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BrokerUnavailableError(FraudError):
    """No Kafka broker answered at the configured address."""

    retriable = True


class BrokerRefusedError(BrokerUnavailableError):
    """A Kafka broker listens at the address but refused this client: a failed login or
    TLS handshake. Trying again with the same settings fails the same way."""

    retriable = False


class PublishError(FraudError):
    """The broker did not acknowledge some sends: what produced them is not committed (a
    crash-free stop: the records are replayed from the committed offsets)."""

    retriable = True


class ScoringError(FraudError):
    """A message could not be scored: its encoding or scoring raised. The exception's class
    and where it was raised are logged under `error_id`, never its text (it could quote
    the message)."""

    def __init__(self, message_id: str, error_id: str) -> None:
        super().__init__(f"message {message_id} could not be scored (error id {error_id})")
        self.message_id, self.error_id = message_id, error_id


class ModelBrokenError(FraudError):
    """A batch failed and so did a known-good probe: the model (or the index) fails on
    every message. Isolating would dead-letter every input; the process stops instead,
    without committing, and says so in one line (fraud/scoring/isolation.py)."""
