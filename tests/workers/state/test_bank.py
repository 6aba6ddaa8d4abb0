"""The reference bank as a compacted changelog, on the real broker."""

import json
import time
from contextlib import ExitStack

import numpy as np
import pytest

from fraud.config import ScorerSettings
from fraud.index import Reference, ReferenceIndex
from fraud.index.changelog import change_key, encode_upsert
from fraud.scoring.detector import Detector, effective_scorer
from tests.fakes import assess
from tests.workers.kafka_helpers import read_topic, running_worker
from workers.kafka import make_producer
from workers.producer import produce
from workers.state import BankFollower, publish_index, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.model]

NOVEL_SCAM = (
    "Zorblax guild notice: your crystal dividend is frozen. Send 3 goats' worth of BTC to "
    "wallet zx-99-qq within 2 hours to unlock it."
)


def _load(encoder, directory) -> ReferenceIndex:
    return ReferenceIndex.load(directory, model=encoder.name, dim=encoder.dim)


def test_publish_then_snapshot_gives_the_same_bank(
    encoder, seed_index_dir, kafka_settings, tmp_path
):
    index = _load(encoder, seed_index_dir)
    published_dir = tmp_path / "published"
    assert publish_index(kafka_settings, index, published_dir) == len(index)
    linked = _load(encoder, published_dir)
    assert linked.changelog_offsets == {0: len(index)}

    copy = snapshot(kafka_settings, encoder.name, encoder.dim, tmp_path / "snapshot")
    assert copy.changelog_offsets == {0: len(index)}
    assert copy.version == index.version  # the same references, ids and labels
    assert copy.reference(7) == index.reference(7)
    ids, vectors = index.vectors()
    assert np.allclose(copy.key_vectors(ids), vectors)


def _send_change(kafka, key: bytes, value: bytes | None) -> float:
    producer = make_producer(kafka)
    try:
        producer.send(kafka.bank_topic, value, key=key).get(timeout=30)
    finally:
        producer.close(timeout=10)
    return time.monotonic()


def _wait_applied(follower: BankFollower, count: int, since: float, timeout_s: float = 30) -> float:
    while follower.applied < count:
        assert time.monotonic() - since < timeout_s, "the change did not reach the worker"
        time.sleep(0.02)
    return time.monotonic() - since


def test_two_running_workers_apply_an_added_then_removed_reference(
    encoder, seed_index_dir, kafka_settings, tmp_path
):
    kafka = kafka_settings.model_copy(update={"publish_scores": True})
    publish_index(kafka, _load(encoder, seed_index_dir), tmp_path)  # links it to the bank
    indexes = [_load(encoder, tmp_path) for _ in "ab"]
    detectors = [Detector(encoder, i, effective_scorer(ScorerSettings(), i)) for i in indexes]
    version = indexes[0].version
    before = assess(detectors[0], [NOVEL_SCAM])[0]
    assert not before.is_alert  # the bank does not know this scam yet: the test can fail

    followers = [BankFollower(kafka, i) for i in indexes]
    new_id = 10_000
    reference = Reference(new_id, NOVEL_SCAM, "fraud", "investment", "analyst:test")
    vector = encoder.encode([NOVEL_SCAM])[0]
    with ExitStack() as stack:
        for detector, follower in zip(detectors, followers, strict=True):
            stack.enter_context(running_worker(detector, kafka, bank=follower))
        sent = _send_change(
            kafka, change_key(new_id), encode_upsert(reference, vector, encoder.name)
        )
        added_after = max(_wait_applied(f, 1, sent) for f in followers)
        produce(kafka, kafka.input_topic, [{"id": "after-add", "text": NOVEL_SCAM}])
        first = read_topic(kafka, kafka.scores_topic, 1)
        added_on_both = [assess(d, [NOVEL_SCAM])[0] for d in detectors]

        sent = _send_change(kafka, change_key(new_id), None)  # a tombstone removes it
        removed_after = max(_wait_applied(f, 2, sent) for f in followers)
        produce(kafka, kafka.input_topic, [{"id": "after-remove", "text": NOVEL_SCAM}])
        both = read_topic(kafka, kafka.scores_topic, 2)
        removed_on_both = [assess(d, [NOVEL_SCAM])[0] for d in detectors]

    decisions = {r.key.decode(): json.loads(r.value) for r in both}
    added, removed = decisions["after-add"], decisions["after-remove"]
    assert len(first) == 1
    assert added["is_alert"] and added["evidence"][0]["reference_id"] == new_id
    assert added["index_version"] == f"{version}+1"
    assert new_id not in [e["reference_id"] for e in removed["evidence"]]
    assert not removed["is_alert"]
    assert removed["index_version"].endswith("+2")
    # Whichever worker owned the partition, both apply every change (each follows the bank).
    assert all(v.is_alert and v.evidence[0].reference_id == new_id for v in added_on_both)
    assert not any(new_id in [e.reference_id for e in v.evidence] for v in removed_on_both)
    for follower in followers:
        follower.close()
    print(f"bank change applied by both workers after {added_after:.3f}s / {removed_after:.3f}s")


def test_fraud_index_update_reweights_and_disables_a_reference_live(
    encoder, seed_index_dir, kafka_settings, tmp_path, capsys
):
    from workers.cli.main import main

    kafka = kafka_settings
    publish_index(kafka, _load(encoder, seed_index_dir), tmp_path)
    worker_index = _load(encoder, tmp_path)
    follower = BankFollower(kafka, worker_index)
    ref_id = next(i for i in range(len(worker_index)) if worker_index.reference(i).label == "fraud")
    args = ["index", "update", str(ref_id), "--index", str(tmp_path)]
    args += ["--bootstrap-servers", kafka.bootstrap_servers, "--bank-topic", kafka.bank_topic]
    try:
        assert main([*args, "--weight", "2.5", "--by", "ana", "--reason", "trusted"]) == 0
        assert "weight 2.5" in capsys.readouterr().out
        _poll_until_applied(follower, 1)
        ref = worker_index.reference(ref_id)
        assert (ref.weight, ref.changed_by, ref.reason) == (2.5, "ana", "trusted")
        own = worker_index.key_vectors(np.array([ref_id]))
        assert worker_index.search(own, 1).log_weights[0, 0] == pytest.approx(np.log(2.5))

        assert main([*args, "--disable", "--by", "bo", "--reason", "stale"]) == 0
        _poll_until_applied(follower, 2)
        ref = worker_index.reference(ref_id)
        assert ref.disabled and ref.weight == 2.5  # the earlier change is kept
        assert main([*args, "--weight", "0"]) == 2  # one readable line, nothing sent
        assert "--weight must be > 0" in capsys.readouterr().err
    finally:
        follower.close()


def _poll_until_applied(follower: BankFollower, count: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while follower.applied < count:
        assert time.monotonic() < deadline, "the change did not reach the follower"
        follower.poll(timeout_ms=200)
