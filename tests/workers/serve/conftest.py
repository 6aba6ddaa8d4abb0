"""Fixtures of the serve tests."""

import pytest

from fraud.encoding.encoder import Encoder


@pytest.fixture
def shared_encoder(encoder, monkeypatch):
    """load_scorer builds its detector from settings: give it the session's encoder."""
    monkeypatch.setattr(Encoder, "from_settings", classmethod(lambda cls, s: encoder))
    return encoder
