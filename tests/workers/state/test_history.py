"""The recipient's history as keys, on the real broker with real worker processes."""

import time

import numpy as np
import pytest

from fraud.config import HistorySettings, Settings
from fraud.schemas import Decision
from fraud.scoring.history import Arrival, HistoryScorer, RecipientHistory
from tests.fakes import assess
from tests.workers.kafka_helpers import read_topic, running_worker
from workers.kafka import ensure_topics
from workers.processes import start_fraud_process
from workers.producer import produce

pytestmark = [pytest.mark.integration, pytest.mark.model]

# A scam campaign the seed bank does not know: paraphrases of one offer, none of which the
# bank alone flags (checked below, so a changed seed set shows up as a failed precondition).
CAMPAIGN = [
    "Hi, this is Mark from GreenGrid. Your roof qualifies for free government solar panels, "
    "reply YES to book your survey",
    "GreenGrid here: homes on your street qualify for zero-cost solar panels under the new "
    "scheme. Reply YES for a survey slot",
    "Final reminder from GreenGrid: your free solar panel grant expires Friday. Reply YES now "
    "to claim your installation",
    "GreenGrid: we still hold a no-cost solar installation for your address. Reply YES today "
    "to keep your place",
]
# min_score low enough that a campaign's weak first variants become keys (see the README's
# replay evaluation for the default and what it costs in false positives), each a whole
# fraud key (soft_values off: with the default soft values an entry carries its own low
# score, and lifts nothing; docs/history.md, "Soft values").
HISTORY = HistorySettings(min_score=0.1, soft_values=False)


def _decisions(kafka, n: int, timeout_s: float = 120) -> dict[str, Decision]:
    records = read_topic(kafka, kafka.scores_topic, n, timeout_s=timeout_s)
    return {a.message_id: a for a in (Decision.from_bytes(r.value) for r in records)}


def _send_one_by_one(kafka, messages: list[dict], already: int) -> dict[str, Decision]:
    """Send each message after the previous one's decision: a recipient's stream in time."""
    decisions: dict[str, Decision] = {}
    for n, message in enumerate(messages, start=already + 1):
        produce(kafka, kafka.input_topic, [message])
        decisions = _decisions(kafka, n)
        assert message["id"] in decisions, f"no decision for {message['id']}"
    return decisions


def test_a_campaign_the_bank_lacks_is_caught_in_one_recipients_history_not_elsewhere(
    detector, kafka_settings
):
    kafka = kafka_settings.model_copy(update={"publish_scores": True})
    ensure_topics(kafka, [kafka.input_topic], partitions=2)
    # One at a time, as the worker gets them below: a bf16 embedding moves slightly with
    # the padding its batchmates impose (issue 21), and the comparison is at 1e-6.
    alone = [assess(detector, [text])[0] for text in CAMPAIGN]
    assert not any(v.is_alert for v in alone), [v.score for v in alone]  # the precondition

    with (
        running_worker(detector, kafka, history=HISTORY) as (w1, _),
        running_worker(detector, kafka, history=HISTORY) as (w2, _),
    ):
        deadline = time.monotonic() + 60
        while not (w1.partitions.owned and w2.partitions.owned):
            assert time.monotonic() < deadline, "the two workers never shared the partitions"
            time.sleep(0.2)
        victim = [
            {"id": f"victim-{i}", "text": t, "recipient": "victim"} for i, t in enumerate(CAMPAIGN)
        ]
        fresh = [
            {"id": f"fresh-{i}", "text": t, "recipient": f"fresh-{i}"}
            for i, t in enumerate(CAMPAIGN)
        ]
        decisions = _send_one_by_one(kafka, victim, 0)
        decisions = _send_one_by_one(kafka, fresh, len(victim))

    flagged = [decisions[m["id"]].is_alert for m in victim]
    assert not flagged[0]
    first = flagged.index(True)
    assert first in (1, 2) and all(flagged[first:]), flagged
    assert not any(decisions[m["id"]].is_alert for m in fresh)
    cited = {e.message_id for e in decisions["victim-3"].evidence if e.source == "history"}
    assert cited and cited <= {"victim-0", "victim-1", "victim-2"}
    # Fresh recipients score as with the bank alone.
    for m, verdict in zip(fresh, alone, strict=True):
        assert decisions[m["id"]].score == pytest.approx(verdict.score, abs=1e-6)


def test_a_killed_workers_recipients_are_restored_by_the_worker_that_takes_over(
    detector, encoder, seed_index_dir, kafka_settings, tmp_path
):
    # session_timeout_ms: the killed worker's partitions move sooner.
    kafka = kafka_settings.model_copy(update={"publish_scores": True, "session_timeout_ms": 6000})
    ensure_topics(kafka, [kafka.input_topic], partitions=2)
    settings = Settings().model_copy(
        update={"kafka": kafka, "index_dir": seed_index_dir, "metrics_port": 0, "history": HISTORY}
    )
    victim = [
        {"id": f"victim-{i}", "text": t, "recipient": "victim"} for i, t in enumerate(CAMPAIGN)
    ]
    log_path = tmp_path / "worker-a.log"
    with log_path.open("w") as log:
        first = start_fraud_process(("worker", "--publish-scores"), settings, log)
    try:
        _send_one_by_one(kafka, victim[:2], 0)
    finally:
        first.kill()  # SIGKILL: no clean shutdown, no last commit
        first.wait()
    assert "restored the history" in log_path.read_text()

    # The second worker gets both partitions once the dead one's session expires, restores
    # the victim's history from the changelog, and goes on as the first would have.
    with running_worker(detector, kafka, history=HISTORY) as (worker, _):
        decisions = _send_one_by_one(kafka, victim[2:], 2)
        assert worker.history.restored_records >= 1
        assert worker.history.history.entries("victim")

    texts = [m["text"] for m in victim]
    arrivals = [Arrival(m["id"], "victim", 0, seq=i) for i, m in enumerate(victim)]
    # Each text encoded alone, as the workers got them one by one (a bf16 embedding moves
    # slightly with its batchmates' padding: issue 21).
    queries = np.concatenate([encoder.encode([t]) for t in texts])
    scorer = HistoryScorer(detector, RecipientHistory(HISTORY))
    expected = scorer.score(arrivals, queries, texts).assessments
    got = [decisions[m["id"]].score for m in victim]
    assert np.allclose(got, [v.score for v in expected], atol=1e-5), (got, expected)
    assert decisions["victim-3"].is_alert
    assert any(e.source == "history" for e in decisions["victim-3"].evidence)


def test_a_confirmed_fraud_joins_its_recipients_history(
    encoder, seed_index_dir, kafka_settings, tmp_path
):
    from fraud.config import ScorerSettings
    from fraud.index import ReferenceIndex
    from fraud.index.changelog import change_key, encode_upsert
    from fraud.scoring.detector import Detector, effective_scorer
    from fraud.scoring.verdicts import AnalystVerdict, verdict_reference
    from workers.kafka import make_producer
    from workers.state import BankFollower, publish_index

    kafka = kafka_settings.model_copy(update={"publish_scores": True})
    publish_index(
        kafka, ReferenceIndex.load(seed_index_dir, model=encoder.name, dim=encoder.dim), tmp_path
    )
    index = ReferenceIndex.load(tmp_path, model=encoder.name, dim=encoder.dim)
    detector = Detector(encoder, index, effective_scorer(ScorerSettings(), index))
    follower = BankFollower(kafka, index)
    # min_score above the campaign's scores: only the verdict can put it in the history.
    history = HistorySettings(min_score=0.9)
    first = {"id": "c-0", "text": CAMPAIGN[0], "recipient": "victim"}
    with running_worker(detector, kafka, bank=follower, history=history) as (worker, _):
        _send_one_by_one(kafka, [first], 0)
        assert not worker.history.history.entries("victim")
        verdict = AnalystVerdict(message_id="c-0", verdict="fraud", category="investment")
        ref = verdict_reference(verdict, CAMPAIGN[0])
        producer = make_producer(kafka)
        value = encode_upsert(ref, encoder.encode([CAMPAIGN[0]])[0], encoder.name)
        producer.send(kafka.bank_topic, value, key=change_key(ref.id)).get(30)
        producer.close(timeout=10)
        deadline = time.monotonic() + 30
        while not worker.history.history.entries("victim"):
            assert time.monotonic() < deadline, "the confirmed fraud did not join the history"
            time.sleep(0.05)
        later = {"id": "c-1", "text": CAMPAIGN[1], "recipient": "victim"}
        decisions = _send_one_by_one(kafka, [later], 1)
    follower.close()
    entry = worker.history.history.entries("victim")[0]
    assert (entry.message_id, entry.category, entry.score) == ("c-0", "investment", 1.0)
    sources = {(e.source, e.message_id or e.reference_id) for e in decisions["c-1"].evidence}
    assert ("history", "c-0") in sources and ("bank", ref.id) in sources
