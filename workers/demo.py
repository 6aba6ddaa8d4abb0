"""`fraud demo`: the main job on the embedded default, start to finish.

Starts a local Kafka broker (or uses the one given), builds the default detector (the
seed set and the UCI SMS Spam Collection with the shipped trained head,
fraud/fitting/default.py; cached after the first run), starts a scoring worker as its own
process, replays the team's demo messages (plus two malformed records, to show the
dead-letter path), prints each alert with its evidence as it arrives, a summary at the
end (with the default's false-alert rate on modern messages it never saw, from
docs/results/default_dev.json), and shuts everything down.
"""

import json
import subprocess
import tempfile
import time
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path

from kafka.structs import TopicPartition

from fraud.config import KafkaSettings, Settings
from fraud.data import demo_messages_path
from fraud.encoding.encoder import Encoder
from fraud.errors import BrokerUnavailableError
from fraud.fitting.default import build_default
from fraud.index import ReferenceIndex
from fraud.index.files import write_index_dir
from fraud.schemas import Assessment, Decision
from fraud.scoring import Detector, format_assessment, load_head
from workers.broker import LocalBroker
from workers.console import open_store
from workers.kafka import ensure_topics, make_consumer, make_producer
from workers.processes import free_port, start_fraud_process, stop_process
from workers.producer import produce, read_messages
from workers.state import publish_index

DEMO_MESSAGES = demo_messages_path()
# `fraud demo --console`'s account (name, password): a throwaway database, on loopback.
DEMO_ACCOUNT = ("demo", "demo-analyst")
MALFORMED = [b"\xff\xfe not utf-8", b'{"id": "demo-bad-json", "text": ']
WAIT_FOR_DECISIONS_S = 180
# The default detector's figures on the modern dev set (`make results-default`), in a
# checkout; an installed package has no docs/ and the summary says so.
DEV_RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "default_dev.json"
DEV_MAPPING = "smishing,spam:ham"


def run_demo(
    settings: Settings,
    external_bootstrap: str | None = None,
    rate: float | None = 20.0,
    console: bool = False,
) -> int:
    """The demo; with `console`, the bank published, the feedback processor and `fraud
    console` started beside the worker, and everything kept running after the summary
    (until Ctrl-C) with a demo account to sign in with."""
    with ExitStack() as stack:
        if external_bootstrap:
            bootstrap = external_bootstrap
            print(f"using the Kafka cluster at {bootstrap}")
        else:
            print("starting a local Kafka broker (KRaft) ...", flush=True)
            broker = stack.enter_context(LocalBroker())
            bootstrap = broker.bootstrap_servers
            print(f"  broker up at {bootstrap}")
        kafka = _demo_topics(settings, bootstrap)
        index_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fraud-demo-")))
        detector = _build_index(settings, index_dir)

        if console:  # verdicts reach the worker through the bank: link the index to it
            publish_index(kafka, detector.index, index_dir)
        print("starting the scoring worker (its own process) ...", flush=True)
        metrics_port = free_port()
        worker = _start_worker(settings, kafka, index_dir, metrics_port, stack)
        _wait_healthy(worker, metrics_port)
        if console:
            url = _start_console(settings, kafka, index_dir, metrics_port, stack)

        messages = read_messages(DEMO_MESSAGES)
        expected = {m["id"]: m for m in messages}
        consumer = make_consumer(
            kafka, group_id=None, enable_auto_commit=False, consumer_timeout_ms=1000
        )
        stack.callback(consumer.close)
        partitions = [
            TopicPartition(kafka.scores_topic, 0),
            TopicPartition(kafka.dead_letter_topic, 0),
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)

        print(f"replaying {len(messages)} demo messages and {len(MALFORMED)} malformed records\n")
        produce(kafka, kafka.input_topic, messages, rate)
        producer = make_producer(kafka)
        for raw in MALFORMED:
            producer.send(kafka.input_topic, raw).get(timeout=30)
        producer.close()

        decisions, dead_letters = _watch(kafka, consumer, worker, expected, detector)
        if not console:
            worker.terminate()
            worker.wait(timeout=60)
        dev_line = _dev_set_line(detector.index.version)
        _print_summary(decisions, expected, dead_letters, worker.returncode, dev_line)
        if console:
            _keep_running(url, worker)
        return 0 if len(decisions) == len(messages) else 1


def _start_console(
    settings: Settings, kafka: KafkaSettings, index_dir: Path, metrics_port: int, stack
) -> str:
    """The feedback processor and `fraud console` as processes of their own, the console
    on a database in the demo's temporary directory with the demo account; its URL."""
    run_dir = index_dir.parent / f"{index_dir.name}-console"
    run_dir.mkdir()
    console = settings.console.model_copy(
        update={
            "database": run_dir / "console.sqlite3",
            "worker_urls": f"http://127.0.0.1:{metrics_port}",
        }
    )
    child = settings.model_copy(update={"kafka": kafka, "index_dir": index_dir, "console": console})
    store, users = open_store(child)
    name, password = DEMO_ACCOUNT
    users.add(name, "admin", password)
    store.close()
    for command in ("feedback-processor", "console"):
        proc = start_fraud_process(command, child, log=None)  # their logs: the terminal
        stack.callback(stop_process, proc)
    url = f"http://{console.host}:{console.port}"
    deadline = time.monotonic() + 60
    while not _answers(f"{url}/login"):
        if time.monotonic() > deadline:
            raise BrokerUnavailableError(f"the console did not answer on {url} within 60 s")
        time.sleep(0.3)
    return url


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (the demo's console)
            return r.status == 200
    except OSError:
        return False


def _keep_running(url: str, worker: subprocess.Popen) -> None:
    """Say where the console is and how to sign in, then wait for Ctrl-C."""
    name, password = DEMO_ACCOUNT
    print(f"\nthe console: {url}  (sign in as {name}, password {password!r}; an admin)")
    print("the worker, the feedback processor and the console keep running: Ctrl-C stops them")
    try:
        while worker.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping ...")


def stream_through_worker(
    settings: Settings, index_dir: Path, texts: list[str], recipients: int, passes: int = 1
) -> list[float]:
    """The texts streamed through a real `fraud worker` on a local broker of their own (as
    the demo runs it): message i to recipient i mod `recipients` (none when 0), `passes`
    times in file order (new ids each pass, into the same history); the scores the worker
    published for the last pass, read back from the scores topic. For `fraud index
    measure --through-worker`: measurement of what the worker does, history included."""
    with ExitStack() as stack:
        broker = stack.enter_context(LocalBroker())
        kafka = _demo_topics(settings, broker.bootstrap_servers)
        metrics_port = free_port()
        worker = _start_worker(settings, kafka, index_dir, metrics_port, stack)
        _wait_healthy(worker, metrics_port)
        messages = [
            {
                "id": f"p{p}-{i}",
                "text": t,
                **({"recipient": f"r{i % recipients}"} if recipients else {}),
            }
            for p in range(passes)
            for i, t in enumerate(texts)
        ]
        produce(kafka, kafka.input_topic, messages)
        consumer = make_consumer(kafka, group_id=None, enable_auto_commit=False)
        stack.callback(consumer.close)
        scores_partition = TopicPartition(kafka.scores_topic, 0)
        consumer.assign([scores_partition])
        consumer.seek_to_beginning(scores_partition)
        scores: dict[str, float] = {}
        deadline = time.monotonic() + WAIT_FOR_DECISIONS_S + len(messages) / 5
        while len(scores) < len(messages) and time.monotonic() < deadline:
            if worker.poll() is not None:
                raise BrokerUnavailableError(f"the worker exited with code {worker.returncode}")
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    decision = Decision.from_bytes(record.value)
                    scores[decision.message_id] = decision.score
        last = [f"p{passes - 1}-{i}" for i in range(len(texts))]
        if missing := [m for m in last if m not in scores]:
            raise BrokerUnavailableError(f"no decision from the worker for {len(missing)} messages")
        return [scores[m] for m in last]


def _demo_topics(settings: Settings, bootstrap: str) -> KafkaSettings:
    """Topics and a consumer group of this run's own, created."""
    run = uuid.uuid4().hex[:8]
    kafka = settings.kafka.model_copy(
        update={
            "bootstrap_servers": bootstrap,
            "input_topic": f"demo-{run}-messages",
            "alert_topic": f"demo-{run}-alerts",
            "scores_topic": f"demo-{run}-scores",
            "dead_letter_topic": f"demo-{run}-dead-letter",
            "bank_topic": f"demo-{run}-references",
            "feedback_topic": f"demo-{run}-feedback",
            "group_id": f"demo-{run}",
            "publish_scores": True,
            "batch_timeout_ms": 100,
        }
    )
    topics = [kafka.input_topic, kafka.alert_topic, kafka.scores_topic, kafka.dead_letter_topic]
    ensure_topics(kafka, topics)
    return kafka


def _build_index(settings: Settings, index_dir: Path) -> Detector:
    """The default detector's index (built once, then from its cache), saved in
    `index_dir` for the worker; a detector on it, to explain the alerts as they come."""
    print("building the default detector (seed set + UCI SMS Spam Collection) ...")
    encoder = Encoder.from_settings(settings)
    explicit = settings.scorer.model_dump(include=settings.scorer.model_fields_set)
    cached, why_not = build_default(encoder, explicit, progress=True)
    index = ReferenceIndex.load(cached, model=encoder.name, dim=encoder.dim)
    write_index_dir(index_dir, index, load_head(cached))
    counts = index.counts()
    print(
        f"  {counts['total']} references ({counts['fraud']} fraud in "
        f"{len(counts['fraud_by_category'])} categories, {counts['legit']} legit), "
        f"version {index.version}, cached in {cached}"
    )
    if why_not:
        print(f"  without its shipped head: {why_not}")
    detector = Detector.from_settings(settings, index_dir)
    print(f"  scorer: {detector.choice.scorer}, threshold {detector.params.threshold:.4f}")
    return detector


def _watch(kafka, consumer, worker, expected: dict, detector: Detector):
    """Print each alert and dead letter as it arrives, until every message has a decision
    and every malformed record a dead letter (or WAIT_FOR_DECISIONS_S has passed)."""
    decisions: dict[str, Decision] = {}
    dead_letters: list[str] = []
    deadline = time.monotonic() + WAIT_FOR_DECISIONS_S
    while (len(decisions) < len(expected) or len(dead_letters) < len(MALFORMED)) and (
        time.monotonic() < deadline
    ):
        if worker.poll() is not None:
            raise BrokerUnavailableError(f"the worker exited with code {worker.returncode}")
        for tp, records in consumer.poll(timeout_ms=500).items():
            for record in records:
                if tp.topic == kafka.dead_letter_topic:
                    reason = dict(record.headers).get("dead_letter_reason", b"?").decode()
                    dead_letters.append(reason)
                    print(f"DEAD LETTER  reason={reason}  {record.value[:40]!r}\n")
                    continue
                alert = Decision.from_bytes(record.value)
                decisions[alert.message_id] = alert
                if alert.is_alert:
                    _print_alert(alert, expected[alert.message_id], detector)
    return decisions, dead_letters


def _wait_healthy(worker: subprocess.Popen, port: int, timeout_s: float = 180) -> None:
    """Wait for the worker's /healthz, so the demo messages stream in as it runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise BrokerUnavailableError(f"the worker exited with code {worker.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise BrokerUnavailableError(f"the worker was not healthy within {timeout_s:.0f}s")


def _start_worker(
    settings: Settings, kafka, index_dir: Path, metrics_port: int, stack: ExitStack
) -> subprocess.Popen:
    worker_settings = settings.model_copy(
        update={"kafka": kafka, "index_dir": index_dir, "metrics_port": metrics_port}
    )
    proc = start_fraud_process("worker", worker_settings, log=None)  # its log: the terminal
    stack.callback(stop_process, proc)
    return proc


def _print_alert(alert: Decision, message: dict, detector: Detector) -> None:
    sender = alert.passthrough.get("sender", "?")
    print(f"[{alert.message_id}] from {sender}: {message['text']}")
    assessment = Assessment(**alert.model_dump(include=set(Assessment.model_fields)))
    print(format_assessment(assessment, detector))
    print(f"  (scored in {alert.processing_ms:.0f} ms, index {alert.index_version})\n")


def _print_summary(
    decisions: dict[str, Decision],
    expected: dict[str, dict],
    dead_letters: list[str],
    worker_rc,
    dev_line: str,
) -> None:
    frauds = [m for m in expected.values() if m.get("expected") == "fraud"]
    legits = [m for m in expected.values() if m.get("expected") != "fraud"]
    caught = [m for m in frauds if m["id"] in decisions and decisions[m["id"]].is_alert]
    false_alerts = [m for m in legits if m["id"] in decisions and decisions[m["id"]].is_alert]
    right_category = [
        m for m in caught if decisions[m["id"]].category == m.get("expected_category")
    ]
    latencies = sorted(a.processing_ms for a in decisions.values())
    print("=" * 72)
    print(f"decisions       {len(decisions)} of {len(expected)} messages scored")
    print(
        f"frauds caught   {len(caught)} of {len(frauds)}"
        f"  (right category: {len(right_category)} of {len(caught)})"
    )
    print(f"false alerts    {len(false_alerts)} of {len(legits)} legit messages")
    for m in false_alerts:
        print(f"                [{m['id']}] {m['text'][:60]}")
    missed = [m for m in frauds if m not in caught]
    for m in missed:
        score = decisions[m["id"]].score if m["id"] in decisions else float("nan")
        print(f"missed          [{m['id']}] score {score:.2f}  {m['text'][:55]}")
    print(dev_line)
    print(f"dead letters    {len(dead_letters)} ({', '.join(dead_letters)})")
    if latencies:
        median, worst = latencies[len(latencies) // 2], latencies[-1]
        print(f"batch latency   median {median:.0f} ms, max {worst:.0f} ms")
    if worker_rc is None:  # --console: it keeps running
        print("worker          running (for the console)")
    else:
        print(f"worker          stopped with exit code {worker_rc} after SIGTERM")
    print(
        json.dumps(
            {
                "scored": len(decisions),
                "caught": len(caught),
                "frauds": len(frauds),
                "false_alerts": len(false_alerts),
                "legit": len(legits),
            }
        )
    )


def _dev_set_line(index_version: str) -> str:
    """The default's figures on the modern dev set (440 public SMS it never saw: measured,
    never trained on), read from the committed result file; says when that file was
    measured on another index version, or is not there."""
    try:
        report = json.loads(DEV_RESULTS.read_text())
        f = report["mappings"][DEV_MAPPING]
    except (OSError, ValueError, KeyError):
        return f"dev set         not measured here ({DEV_RESULTS.name} not found)"
    line = (
        f"dev set         false alerts {f['confusion']['fp']} of {f['legit']} legit "
        f"({f['false_alert_rate']:.2%}), precision {f['precision']:.3f}, recall "
        f"{f['recall']:.3f}: modern SMS it never saw\n                "
        f"({report['csv']}, fraud = smishing+spam; docs/results/{DEV_RESULTS.name})"
    )
    measured_on = report["detector"]["index_version"]
    if measured_on != index_version:
        line += f"\n                (measured on index version {measured_on}, not this one)"
    return line
