"""One micro-batch (workers/scoring/batch.py), without a broker: decoding and dead letters,
records of partitions that moved away, the stage clock, and a failure's dead letter."""

import json
import time

import pytest

from fraud.scoring.isolation import Failure
from tests.fakes import consumer_record
from workers.runtime import StageClock
from workers.scoring.batch import Batch, Failed, arrival


def _message(message_id: str, **fields) -> bytes:
    return json.dumps({"id": message_id, "text": f"text of {message_id}", **fields}).encode()


def test_a_batch_decodes_what_it_can_and_makes_dead_letters_of_the_rest():
    records = [
        consumer_record(_message("m-0"), offset=0),
        consumer_record(b'{"id": "m-1", "text": ', offset=1),
        consumer_record(_message("m-2"), partition=1, offset=0),
        consumer_record(json.dumps({"id": "m-3"}).encode(), offset=2),
    ]
    batch = Batch.decode(records, max_message_bytes=65536)
    assert [m.id for _, m in batch.decoded] == ["m-0", "m-2"]
    assert [(d.record.offset, d.reason) for d in batch.dead_letters] == [
        (1, "invalid_json"),
        (2, "no_text"),
    ]
    assert "decode" in batch.stage.seconds

    batch.keep({1})  # partition 0 went to another worker in a rebalance
    assert [m.id for _, m in batch.decoded] == ["m-2"]
    assert batch.rows == [1]  # its row in the queries the encoder thread makes
    assert batch.dead_letters == [] and [r.partition for r in batch.records] == [1]


def test_the_stage_clock_charges_laps_and_skips_what_is_no_stage():
    clock = StageClock()
    time.sleep(0.02)
    clock.lap("decode")
    time.sleep(0.05)
    clock.skip()  # waiting for the encoder thread
    clock.lap("publish")
    assert clock.seconds["decode"] >= 0.02 and clock.seconds["publish"] < 0.02
    assert clock.timed("encode", lambda n: n * 2, 21) == 42
    assert "encode" in clock.seconds

    def fails():
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        clock.timed("search", fails)
    assert "search" not in clock.seconds  # nothing charged for what raised


def test_a_failed_message_becomes_a_dead_letter_naming_its_stage_and_id_never_its_text():
    record = consumer_record(_message("m-9"), offset=4)
    message = Batch.decode([record], 65536).decoded[0][1]
    try:
        raise ValueError(f"cannot encode {message.text!r}")
    except ValueError as e:
        failed = Failed(record, message, "encoding", Failure(e))
    letter = failed.dead_letter()
    assert (letter.reason, letter.error_class) == ("scoring_error", "ValueError")
    assert letter.detail.startswith("encoding message m-9 raised ValueError at test_batch.py:")
    assert message.text not in letter.detail


def test_the_input_offset_orders_a_message_in_its_recipients_stream():
    record = consumer_record(_message("m-1", recipient="+44 7700"), partition=2, offset=17)
    message = Batch.decode([record], 65536).decoded[0][1]
    a = arrival(record, message)
    assert (a.message_id, a.recipient, a.seq, a.shard) == ("m-1", "+44 7700", 17, 2)
    record = consumer_record(_message("m-2", recipient=""), timestamp=None)
    assert arrival(record, Batch.decode([record], 65536).decoded[0][1]).recipient is None
