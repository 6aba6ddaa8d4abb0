"""`fraud setup`: every topic the pipeline uses, then an index directory linked to the bank.

The input topic and the history topic get the same number of partitions (the history of
input partition p lives in history partition p); the bank, history and citations topics
are compacted. Idempotent: topics that exist are left as they are.

The index directory (setup_index) follows what the user means, and never replaces a
user's index silently:

- the bank is empty: the index in the directory is published to it (the README's "Using
  it": build an index, train it, then set up); an empty or missing directory gets the
  seed set, built and published;
- the bank holds references: the directory gets a snapshot of it when it holds no index,
  or an earlier snapshot of this same bank (its head and scorer parameters kept); an
  index of another origin is refused in one line saying what to do (--force replaces it).
"""

from pathlib import Path

from fraud.config import KafkaSettings, Settings
from fraud.data import seed_references_path
from fraud.datasets import read_labeled_csv
from fraud.errors import DataError
from fraud.index import ReferenceIndex, build_index
from fraud.index.files import describe, index_files_in, linked_to
from workers.kafka.clients import ensure_topics
from workers.state.bank import (
    COMPACTED,
    bank_link,
    end_offsets,
    ensure_bank_topic,
    publish_index,
    snapshot,
)
from workers.state.history import ensure_history_topic


def create_topics(kafka: KafkaSettings, partitions: int) -> None:
    ensure_topics(kafka, [kafka.input_topic], partitions=partitions)
    ensure_history_topic(kafka, partitions)
    ensure_bank_topic(kafka)
    ensure_topics(kafka, [kafka.citation_topic], configs=COMPACTED)
    ensure_topics(
        kafka,
        [
            kafka.alert_topic,
            kafka.scores_topic,
            kafka.dead_letter_topic,
            kafka.feedback_topic,
            kafka.campaign_topic,
        ],
    )


def bank_is_empty(kafka: KafkaSettings) -> bool:
    return sum(end_offsets(kafka).values()) == 0


def setup_index(settings: Settings, make_encoder, force: bool = False):
    """Link settings.index_dir to the bank by the rules of the module docstring; returns
    the index written and a line saying what was done. `make_encoder()` is called only
    when the index is built or loaded (a refusal comes before the model is loaded)."""
    kafka, directory = settings.kafka, Path(settings.index_dir)
    holds_index = bool(index_files_in(directory))
    if bank_is_empty(kafka):
        encoder = make_encoder()
        if holds_index:
            index = ReferenceIndex.load(directory, model=encoder.name, dim=encoder.dim)
            what = f"the index in {directory}"
        else:
            seed = read_labeled_csv(seed_references_path())
            index = build_index(encoder, seed, "seed", settings.scorer.model_dump(), False)
            what = "the seed set"
        sent = publish_index(kafka, index, directory)
        return index, f"bank was empty: published {what} ({sent} references)"
    if holds_index and not force and not linked_to(directory, bank_link(kafka)):
        raise DataError(
            f"{directory} holds {describe(directory)}, not a snapshot of the bank "
            f"{kafka.bank_topic}, which already holds references: refusing to replace it. "
            "Give setup an empty --index to snapshot the bank into, or publish "
            f"{directory} to an empty bank (another --bank-topic), or add --force to "
            "replace it with the bank's snapshot"
        )
    encoder = make_encoder()
    index = snapshot(kafka, encoder.name, encoder.dim, directory, force=force)
    return index, f"bank already filled: snapshot at offsets {index.changelog_offsets}"
