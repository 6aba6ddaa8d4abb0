"""`fraud produce`: send a CSV or JSONL file of messages to a topic at a given rate."""

import csv
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fraud.config import KafkaSettings
from fraud.errors import DataError
from workers.kafka import make_producer

log = logging.getLogger(__name__)


def read_messages(path: Path) -> list[dict[str, Any]]:
    """Messages from `.jsonl` (one JSON object a line) or `.csv` (a `text` column).

    A row without an `id` gets `<file stem>-<row number>`; other fields pass through.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rows = list(_read_jsonl(path) if path.suffix == ".jsonl" else _read_csv(path))
    if not rows:
        raise DataError(f"{path}: no messages")
    for n, row in enumerate(rows, start=1):
        row.setdefault("id", f"{path.stem}-{n}")
    return rows


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise DataError(f"{path}:{n}: expected an object with a string 'text'")
            yield obj


def _read_csv(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "text" not in (reader.fieldnames or []):
                raise DataError(f"{path}: expected a CSV header with a 'text' column")
            yield from ({k: v for k, v in row.items() if k} for row in reader)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV: {e}") from None


def produce(
    kafka: KafkaSettings, topic: str, messages: list[dict[str, Any]], rate: float | None = None
) -> int:
    """Send `messages` at most `rate` per second (None: as fast as possible), keyed by
    recipient where they have one (so one worker sees all of a recipient's messages, in
    order), else by id.

    Returns the number acknowledged by the broker; raises if any send failed.
    """
    producer = make_producer(kafka)
    try:
        start = time.monotonic()
        futures = []
        for n, message in enumerate(messages):
            if rate:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            value = json.dumps(message, ensure_ascii=False).encode("utf-8")
            futures.append(producer.send(topic, value, key=message_key(message)))
        producer.flush(timeout=60)
        for f in futures:
            f.get(timeout=0)  # raises the send's error if the broker refused it
        return len(futures)
    finally:
        producer.close(timeout=10)


def message_key(message: dict[str, Any]) -> bytes:
    recipient = message.get("recipient")
    key = recipient if isinstance(recipient, str | int) and recipient != "" else message["id"]
    return str(key).encode("utf-8")
