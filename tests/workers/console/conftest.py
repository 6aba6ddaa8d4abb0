"""A console app on a fresh database, without Kafka: users of each role, a recording
producer, an alert on a message whose text it knows and a bank reference it cites."""

import re
from dataclasses import dataclass

import numpy as np
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from fraud.config import ConsoleSettings, KafkaSettings
from fraud.index import Reference
from fraud.index.changelog import decode_change, encode_upsert
from fraud.schemas import Evidence
from tests.fakes import RecordingProducer, decision
from workers.console import Console, LoginLimiter, Store, Users, create_app

PASSWORD = "correct horse battery"  # noqa: S105 (a test user's)
SCAM = "Your parcel is held: pay the 1.99 customs fee at parcel-fee.example now"
# argon2id still, with the least memory and passes: the defaults take seconds per test
# on a loaded 2-core machine (test_add_user... hashes with the defaults).
CHEAP_ARGON2 = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
REFERENCE = "Parcel held at the depot: pay the customs fee today or it is returned"


@dataclass
class ConsoleUnderTest:
    client: TestClient
    console: Console
    producer: RecordingProducer


def add_alert(store: Store, message_id: str, text: str, score: float = 0.9, ms: int = 0):
    """An alert on `message_id` (its text known), citing reference 7."""
    alert = decision(message_id, True, "parcel").model_copy(
        update={
            "score": score,
            "category_distribution": {"parcel": score},
            "evidence": [Evidence(reference_id=7, category="parcel", similarity=0.8, weight=0.6)],
        }
    )
    with store.transaction() as db:
        store.put_message(db, message_id, text, "+44 7700 900001", "+44 7700 900002", ms or 1)
        store.put_alert(db, alert, ms or 1_767_225_600_000)


def add_reference(store: Store) -> None:
    ref = Reference(7, REFERENCE, "fraud", "parcel", "seed")
    raw = encode_upsert(ref, np.ones(4, dtype=np.float32), "fake-encoder")
    with store.transaction() as db:
        store.put_bank_change(db, decode_change(b"7", raw), raw, 0, 0, 1_767_225_600_000)


@pytest.fixture
def console_app(tmp_path) -> ConsoleUnderTest:
    settings = ConsoleSettings(database=tmp_path / "console.sqlite3", login_attempts=3)
    store = Store(settings.database)
    users = Users(store, settings.session_ttl_s, CHEAP_ARGON2)
    for role in ("viewer", "analyst", "admin"):
        users.add(role, role, PASSWORD)
    add_reference(store)
    add_alert(store, "m-1", SCAM)
    producer = RecordingProducer()
    limiter = LoginLimiter(settings.login_attempts, settings.login_window_s)
    console = Console(settings, KafkaSettings(), store, users, limiter, producer, None)
    with TestClient(create_app(console), base_url="http://127.0.0.1") as client:
        yield ConsoleUnderTest(client, console, producer)
    store.close()


def login_token(client: TestClient) -> str:
    page = client.get("/login")
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD):
    token = login_token(client)
    return client.post(
        "/login",
        data={"name": name, "password": password, "csrf": token},
        follow_redirects=False,
    )


def csrf_of(client: TestClient, path: str = "/queue") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def page_text(html: str) -> str:
    """A page's text without its tags (the message's shared words are in <mark>)."""
    return re.sub(r"<[^>]+>", "", html)
