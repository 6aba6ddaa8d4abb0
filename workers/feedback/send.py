"""Sending an analyst verdict to the feedback topic: `fraud feedback` and the console do
it the same way (keyed by message id, the verdict's JSON), the processor reads it."""

from kafka import KafkaProducer

from fraud.config import KafkaSettings
from fraud.scoring.verdicts import AnalystVerdict


def send_verdict(producer: KafkaProducer, kafka: KafkaSettings, verdict: AnalystVerdict):
    """Send one verdict; returns the send's future (the caller waits on it)."""
    return producer.send(kafka.feedback_topic, verdict.to_bytes(), key=verdict.message_id.encode())
