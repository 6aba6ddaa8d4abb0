"""The `fraud worker` process's lifecycle (workers/scoring/main.py) without a broker: one
ExitStack owns every client, so a start that fails half-way closes what it had opened.
(The process on the real broker, stopped by SIGTERM: test_worker.py.)"""

import logging
from types import SimpleNamespace

import pytest

from fraud.config import Settings
from fraud.errors import BrokerUnavailableError
from workers.scoring import main


class Closable:
    def __init__(self, name: str, closed: list[str]) -> None:
        self.name, self.closed = name, closed

    def close(self, **_) -> None:
        self.closed.append(self.name)


def test_a_start_that_fails_half_way_closes_what_it_opened(monkeypatch, caplog):
    closed: list[str] = []
    runtime = SimpleNamespace(detector=None, bank=None, close=lambda: closed.append("bank"))
    monkeypatch.setattr(main, "load_runtime", lambda settings: runtime)
    monkeypatch.setattr(main, "ensure_topics", lambda *a, **k: None)
    monkeypatch.setattr(main, "make_consumer", lambda *a, **k: Closable("consumer", closed))

    def refuse(*_, **__):
        raise BrokerUnavailableError("no Kafka broker answered")

    monkeypatch.setattr(main, "make_producer", refuse)
    settings = Settings().model_copy(
        update={"history": Settings().history.model_copy(update={"enabled": False})}
    )
    with caplog.at_level(logging.INFO), pytest.raises(BrokerUnavailableError):
        main.run_worker(settings)
    assert closed == ["consumer", "bank"]  # the last opened, the first closed
    assert caplog.records[-1].getMessage() == "worker stopped"
