"""A feedback processor that fails to start closes what it had opened (workers/feedback/
processor.py FeedbackProcessor.open, main.py), without a broker: the Kafka clients are
recording stand-ins, and the consumer's creation fails as an unreachable broker makes it."""

from types import SimpleNamespace

import pytest

from fraud.config import KafkaSettings, Settings
from fraud.errors import BrokerUnavailableError
from tests.fakes import FakeEncoder
from workers.feedback import main, processor
from workers.feedback.processor import Citations, FeedbackProcessor


class Closable:
    def __init__(self, name: str, closed: list[str]) -> None:
        self.name, self.closed = name, closed

    def close(self, **_) -> None:
        self.closed.append(self.name)


@pytest.fixture
def broker_refuses_the_consumer(monkeypatch) -> list[str]:
    """open()'s steps before the consumer succeed (recording what is closed); creating
    the consumer fails."""
    closed: list[str] = []
    monkeypatch.setattr(processor, "_ensure_topics", lambda kafka: None)
    monkeypatch.setattr(
        processor.RecentMessages,
        "open",
        classmethod(lambda cls, *a, **k: Closable("recent", closed)),
    )
    monkeypatch.setattr(
        processor.BankFollower, "caught_up", classmethod(lambda cls, *a: Closable("bank", closed))
    )
    monkeypatch.setattr(Citations, "read", classmethod(lambda cls, kafka: cls()))

    def refuse(*_, **__):
        raise BrokerUnavailableError("no Kafka broker answered")

    monkeypatch.setattr(processor, "make_consumer", refuse)
    return closed


def test_a_failing_start_closes_the_bank_follower_and_the_recent_messages(
    broker_refuses_the_consumer,
):
    with pytest.raises(BrokerUnavailableError):
        FeedbackProcessor.open(KafkaSettings(), FakeEncoder())
    assert broker_refuses_the_consumer == ["bank", "recent"]


def test_a_follower_the_caller_gave_is_the_callers_to_close(broker_refuses_the_consumer):
    closed = broker_refuses_the_consumer
    with pytest.raises(BrokerUnavailableError):
        FeedbackProcessor.open(KafkaSettings(), FakeEncoder(), bank=Closable("given", closed))
    assert closed == ["recent"]


def test_the_process_closes_its_runtime_when_the_processor_fails_to_start(
    broker_refuses_the_consumer, monkeypatch
):
    closed = broker_refuses_the_consumer
    runtime = SimpleNamespace(
        detector=SimpleNamespace(encoder=FakeEncoder(), index=None),
        bank=Closable("runtime bank", closed),
        close=lambda: closed.append("runtime"),
    )
    monkeypatch.setattr(main, "load_runtime", lambda settings, follow_unlinked: runtime)
    with pytest.raises(BrokerUnavailableError):
        main.run_feedback_processor(Settings())
    assert closed == ["recent", "runtime"]
