"""Campaigns and retroactive alerts, on the real broker with a real worker and processor."""

import json
import time

import pytest

from fraud.config import CampaignSettings, ScorerSettings
from fraud.index import ReferenceIndex
from fraud.schemas import Decision
from fraud.scoring.detector import Detector, effective_scorer
from fraud.scoring.verdicts import AnalystVerdict
from tests.fakes import assess
from tests.workers.feedback.test_processor import _send_verdicts
from tests.workers.kafka_helpers import read_topic, running_processor, running_worker
from workers.feedback import FeedbackProcessor
from workers.producer import produce
from workers.state import BankFollower, publish_index

pytestmark = [pytest.mark.integration, pytest.mark.model]

NAMES = ["Sarah", "Tom", "Priya", "Owen"]
# One message, personalised per recipient: the shape of a real campaign. The seed bank
# scores it far below the threshold (checked below).
TEMPLATE = (
    "Hi {}, GreenGrid here: your home qualifies for free government solar panels. "
    "Reply YES to book your survey"
)


def test_a_confirmed_member_turns_the_let_through_rest_of_its_campaign_into_alerts(
    encoder, seed_index_dir, kafka_settings, tmp_path
):
    kafka = kafka_settings.model_copy(update={"publish_scores": True})
    publish_index(
        kafka, ReferenceIndex.load(seed_index_dir, model=encoder.name, dim=encoder.dim), tmp_path
    )

    def detector() -> Detector:
        index = ReferenceIndex.load(tmp_path, model=encoder.name, dim=encoder.dim)
        return Detector(encoder, index, effective_scorer(ScorerSettings(), index))

    worker_detector = detector()
    messages = [
        {"id": f"gg-{i}", "text": TEMPLATE.format(n), "recipient": f"r-{i}"}
        for i, n in enumerate(NAMES)
    ]
    assert not any(a.is_alert for a in assess(worker_detector, [m["text"] for m in messages]))
    follower = BankFollower(kafka, worker_detector.index)
    campaigns = CampaignSettings(min_score=0.1, min_recipients=3)
    processor = FeedbackProcessor.open(kafka, encoder, detector=detector(), campaigns=campaigns)
    try:
        with running_processor(processor), running_worker(worker_detector, kafka, bank=follower):
            produce(kafka, kafka.input_topic, messages)
            decisions = read_topic(kafka, kafka.scores_topic, len(messages))
            assert not any(Decision.from_bytes(r.value).is_alert for r in decisions)
            deadline = time.monotonic() + 30
            while (c := processor.tracker.campaign_of("gg-0")) is None or c.size < len(NAMES):
                assert time.monotonic() < deadline, "the processor did not group the campaign"
                time.sleep(0.1)
            _send_verdicts(
                kafka,
                [AnalystVerdict(message_id="gg-0", verdict="fraud", category="investment")],
            )
            alerts = read_topic(kafka, kafka.alert_topic, len(NAMES) - 1)
            records = read_topic(kafka, kafka.campaign_topic, 1)
    finally:
        follower.close()

    retro = [Decision.from_bytes(r.value) for r in alerts]
    assert sorted(a.message_id for a in retro) == ["gg-1", "gg-2", "gg-3"]
    campaign_id = processor.tracker.campaign_of("gg-0").campaign_id
    assert all(a.retroactive and a.campaign_id == campaign_id for a in retro)
    assert all(a.passthrough["recipient"].startswith("r-") for a in retro)
    latest = json.loads(records[-1].value)
    assert latest["campaign_id"] == campaign_id and latest["confirmed_by"] == "gg-0"
    assert (latest["size"], latest["recipients"]) == (4, 4)
    assert "text" not in latest
