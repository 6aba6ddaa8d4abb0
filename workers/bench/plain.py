"""The plain pipeline `fraud bench` measures the project against: what a user would write
instead, in one screen of code, with none of the project's machinery.

    consume (kafka-python) -> embed (sentence-transformers, fp32) -> FAISS IndexFlatIP
    search over the seed references -> one decision record per message produced

A poll's records are embedded with one `SentenceTransformer.encode` call (its own batch of
32) and decided one by one: the nearest reference's label, an alert when it is a fraud at
cosine >= `threshold`. No pipelining, no length bucketing, no offsets held back until the
decisions are acknowledged (the consumer commits automatically), no dead letters. Every
decision goes to `scores_topic` (the benchmark's reader times it there, as it does the
worker's), keyed by the message id, with the alerts also on `alert_topic`.

Run as a child process (workers/bench/anchor.py starts it): `python -m workers.bench.plain
CONFIG`, CONFIG a JSON object with bootstrap_servers, input_topic, scores_topic,
alert_topic, group_id, model_path, references (a labeled CSV), threshold.
"""

import json
import signal
import sys
import threading

import faiss
import numpy as np
from kafka import KafkaConsumer, KafkaProducer

from fraud.datasets import read_labeled_csv

# A consumer poll's records at most: one encode call's worth.
BATCH = 32


def load_references(model, references: str) -> tuple[faiss.IndexFlatIP, np.ndarray]:
    """The labeled references embedded (unit rows) into an exact inner-product index, and
    whether each is a fraud."""
    rows = read_labeled_csv(references)
    vectors = model.encode([r.text for r in rows], batch_size=BATCH, normalize_embeddings=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.asarray(vectors, dtype=np.float32))
    return index, np.array([r.label == "fraud" for r in rows])


def decide(model, index, is_fraud: np.ndarray, texts: list[str], threshold: float) -> list:
    """(alert, score) per text: its nearest reference's cosine, an alert when that
    reference is a fraud and the cosine reaches `threshold`."""
    vectors = model.encode(texts, batch_size=BATCH, normalize_embeddings=True)
    sims, ids = index.search(np.asarray(vectors, dtype=np.float32), 1)
    return [
        (bool(is_fraud[i[0]] and s[0] >= threshold), float(s[0]))
        for s, i in zip(sims, ids, strict=True)
    ]


def run(config: dict, stop: threading.Event) -> None:
    """Consume, embed, search and produce until `stop` is set."""
    from sentence_transformers import SentenceTransformer  # the heavy import, once here

    model = SentenceTransformer(config["model_path"], device="cpu", local_files_only=True)
    index, is_fraud = load_references(model, config["references"])
    servers = config["bootstrap_servers"]
    consumer = KafkaConsumer(
        config["input_topic"],
        bootstrap_servers=servers,
        group_id=config["group_id"],
        auto_offset_reset="earliest",
    )
    producer = KafkaProducer(bootstrap_servers=servers)
    try:
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=100, max_records=BATCH)
            messages = [json.loads(r.value) for rs in polled.values() for r in rs]
            if not messages:
                continue
            texts = [m["text"] for m in messages]
            for m, (alert, score) in zip(
                messages, decide(model, index, is_fraud, texts, config["threshold"]), strict=True
            ):
                value = json.dumps({"id": m["id"], "score": score, "alert": alert}).encode()
                producer.send(config["scores_topic"], value, key=m["id"].encode())
                if alert:
                    producer.send(config["alert_topic"], value, key=m["id"].encode())
    finally:
        producer.flush(30)
        producer.close(timeout=10)
        consumer.close()


def main(argv: list[str]) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run(json.loads(argv[0]), stop)


if __name__ == "__main__":
    main(sys.argv[1:])
