"""A single-node Apache Kafka broker (KRaft, combined broker+controller) on loopback.

For development, tests and the demo. The jars come from Maven Central through
deploy/kafka/pom.xml (`make kafka-jars`). Usage:

    with LocalBroker() as broker:
        print(broker.bootstrap_servers)   # "127.0.0.1:<free port>"

Or `python -m workers.broker` (`make broker`) to run one in the foreground until Ctrl-C: it
prints its address in one line.

The broker's JVM dies with the process that started it: a killed pytest or a killed
`make broker` leaves no Java process behind (die_with_parent).

With `scram_user=(name, password)` it also listens with SASL_SSL (TLS, SCRAM-SHA-512 login)
on its own port, with a throwaway CA made by Java's keytool: how the clients' security
settings are tested against a real broker.

    with LocalBroker(scram_user=("fraud", "s3cret")) as broker:
        broker.sasl_ssl_bootstrap_servers, broker.ca_file

Fault tests stop and start the same broker again: `stop(keep_data=True)` (a controlled
shutdown) or `kill()` (a crash), then `start()`, which brings it back on the same ports with
the same data. `advertised_port` puts something in front of its PLAINTEXT listener (a test's
TCP proxy): the broker tells clients to connect there, so every connection after the
bootstrap one goes through it.
"""

import base64
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from fraud.errors import BrokerUnavailableError, ConfigError
from workers.processes import free_port

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_LIB = REPO_ROOT / "deploy" / "kafka" / "lib"
_LOG4J_CONFIG = """\
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log}"><PatternLayout pattern="[%d] %p %m (%c)%n"/></File>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
    <Logger name="kafka" level="WARN"/>
    <Logger name="org.apache.kafka" level="WARN"/>
  </Loggers>
</Configuration>
"""


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _prctl():
    """libc's prctl, or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent(sig: int = signal.SIGKILL):
    """A preexec_fn for subprocess.Popen: the child receives `sig` when its parent dies,
    however it dies (PR_SET_PDEATHSIG); None where Linux's prctl is not available.

    Without it, a JVM started in a session of its own (start_new_session, so that Ctrl-C
    reaches Python first and it stops the broker cleanly) outlived a parent killed with
    SIGKILL: orphan brokers piled up after killed test runs. Linux delivers the signal
    when the *thread* that started the child ends, so start brokers from a thread that
    outlives them (the main thread, as every caller here does). prctl is looked up here,
    in the parent: between fork and exec the child only calls it, which is safe with the
    parent's other threads. A parent that died before the call is caught by comparing
    the child's parent with it.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def cluster_id() -> str:
    """Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own Uuid.randomUuid(), never one starting with '-': the storage tool's
    argument parser would read it as an option.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class LocalBroker:
    def __init__(
        self,
        *,
        lib_dir: Path = KAFKA_LIB,
        heap: str = "384m",
        start_timeout_s: float = 90.0,
        java: str = "java",
        scram_user: tuple[str, str] | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.lib_dir, self.heap, self.start_timeout_s, self.java = (
            lib_dir,
            heap,
            start_timeout_s,
            java,
        )
        self.scram_user = scram_user
        # Chosen now, not at start(): a proxy in front of the broker needs the port first,
        # and a restarted broker comes back where its clients left it.
        self.port, self.controller_port = free_port(), free_port()
        self.sasl_ssl_port = free_port() if scram_user is not None else 0
        self.advertised_port = advertised_port or self.port
        self.data_dir: Path | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (for its CPU use in `fraud bench`)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        """The SASL_SSL listener (with scram_user): TLS, then a SCRAM-SHA-512 login."""
        assert self.sasl_ssl_port, "broker not started with scram_user"  # noqa: S101
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def ca_file(self) -> Path:
        """PEM certificate of the CA that signed the SASL_SSL listener's certificate."""
        assert self.data_dir is not None and self.sasl_ssl_port, "no SASL_SSL listener"  # noqa: S101
        return self.data_dir / "ca.pem"

    @property
    def log_file(self) -> Path:
        assert self.data_dir is not None, "broker not started"  # noqa: S101
        return self.data_dir / "broker.log"

    def __enter__(self) -> "LocalBroker":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _java(self, main: str, *args: str) -> list[str]:
        assert self.data_dir is not None  # noqa: S101
        return [
            self.java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.xml'}",
            "-cp",
            f"{self.lib_dir}/*",
            main,
            *args,
        ]

    def start(self) -> None:
        """Start the broker: a fresh one, or after stop(keep_data=True) or kill() the same
        one again (same ports, same data); returns once it serves consumer groups."""
        if self.data_dir is None:
            self._create()
        stdout = (self.data_dir / "stdout.log").open("ab")
        self._proc = subprocess.Popen(
            self._java("kafka.Kafka", str(self.data_dir / "server.properties")),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it cleanly
            preexec_fn=die_with_parent(),  # no orphan JVM if we are killed
        )
        stdout.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("kafka broker up at %s (data %s)", self.bootstrap_servers, self.data_dir)

    def _create(self) -> None:
        """A data directory with the broker's configuration and formatted storage."""
        if not any(self.lib_dir.glob("kafka_2.13-*.jar")):
            raise ConfigError(
                f"no Kafka jars in {self.lib_dir}: run `make kafka-jars` "
                "(mvn -f deploy/kafka/pom.xml dependency:copy-dependencies)"
            )
        if shutil.which(self.java) is None:
            raise ConfigError(f"'{self.java}' not found: the local broker needs Java 17+")
        self.data_dir = Path(tempfile.mkdtemp(prefix="fraud-kafka-"))
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{self.advertised_port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        security: list[str] = []
        format_args: list[str] = []
        if self.scram_user is not None:
            listeners.append(f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port}")
            advertised.append(listeners[-1])
            protocols.append("SASL_SSL:SASL_SSL")
            try:
                security = self._sasl_ssl_config()
            except BaseException:
                self._cleanup()
                raise
            name, password = self.scram_user
            # KRaft keeps SCRAM credentials in the metadata log: written at format time.
            format_args = ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        config = self.data_dir / "server.properties"
        config.write_text(self._server_properties(listeners, advertised, protocols, security))
        (self.data_dir / "log4j2.xml").write_text(
            _LOG4J_CONFIG.format(log=self.data_dir / "broker.log")
        )
        self._format_storage(config, format_args)

    def _server_properties(
        self, listeners: list[str], advertised: list[str], protocols: list[str], security: list[str]
    ) -> str:
        """The broker's server.properties: one KRaft node, broker and controller."""
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners={','.join(listeners)},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners={','.join(advertised)}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                f"listener.security.protocol.map={','.join(protocols)}",
                *security,
                f"log.dirs={self.data_dir / 'logs'}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                # Abort a dead producer's timed-out transaction within a second of its
                # timeout, not up to 10 s later (the default scan interval).
                "transaction.abort.timed.out.transaction.cleanup.interval.ms=1000",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "log.flush.interval.messages=9223372036854775807",
                "",
            ]
        )

    def _format_storage(self, config: Path, format_args: list[str]) -> None:
        """Format the data directory's storage (KRaft) with a new cluster id."""
        fmt = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id(),
                "-c",
                str(config),
                *format_args,
            ),
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=die_with_parent(),
        )
        if fmt.returncode != 0:
            self._cleanup()
            raise BrokerUnavailableError(
                f"kafka storage format failed: {fmt.stderr.strip()[-500:]}"
            )

    def _sasl_ssl_config(self) -> list[str]:
        """A throwaway CA and a server certificate for 127.0.0.1 and localhost, made with
        Java's keytool (the broker needs Java anyway); the broker settings that use them."""
        assert self.data_dir is not None  # noqa: S101
        keytool = Path(shutil.which(self.java) or self.java).resolve().parent / "keytool"
        ca_store, server_store = self.data_dir / "ca.p12", self.data_dir / "server.p12"
        csr, crt = self.data_dir / "server.csr", self.data_dir / "server.crt"
        password = secrets.token_hex(16)
        key = ["-keyalg", "EC", "-groupname", "secp256r1", "-validity", "2"]
        ca = ["-keystore", str(ca_store), "-storetype", "PKCS12", "-storepass", password]
        server = ["-keystore", str(server_store), "-storetype", "PKCS12", "-storepass", password]
        steps = [
            ["-genkeypair", *ca, "-alias", "ca", "-dname", "CN=fraud-test-ca", *key,
             "-ext", "bc:c", "-ext", "KeyUsage:c=keyCertSign,cRLSign"],
            ["-exportcert", *ca, "-alias", "ca", "-rfc", "-file", str(self.data_dir / "ca.pem")],
            ["-genkeypair", *server, "-alias", "server", "-dname", "CN=localhost", *key],
            ["-certreq", *server, "-alias", "server", "-file", str(csr)],
            ["-gencert", *ca, "-alias", "ca", "-infile", str(csr), "-outfile", str(crt),
             "-rfc", "-validity", "2", "-ext", "SAN=IP:127.0.0.1,DNS:localhost"],
            ["-importcert", *server, "-alias", "ca", "-noprompt",
             "-file", str(self.data_dir / "ca.pem")],
            ["-importcert", *server, "-alias", "server", "-file", str(crt)],
        ]  # fmt: skip
        for step in steps:
            done = subprocess.run([str(keytool), *step], capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                raise BrokerUnavailableError(
                    f"keytool {step[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}"
                )
        return [
            "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type=PKCS12",
            f"listener.name.sasl_ssl.ssl.keystore.location={server_store}",
            f"listener.name.sasl_ssl.ssl.keystore.password={password}",
            f"listener.name.sasl_ssl.ssl.key.password={password}",
        ]

    def _wait_ready(self) -> None:
        # Lazily: `python -m workers.broker` starts a broker without importing the client.
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                tail = (self.data_dir / "stdout.log").read_text(errors="replace")[-1500:]
                raise BrokerUnavailableError(f"kafka broker exited during start-up:\n{tail}")
            # A plain TCP probe first: the Kafka client logs every refused connection loudly.
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                time.sleep(0.2)
                continue
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers,
                    bootstrap_timeout_ms=5000,
                    request_timeout_ms=5000,
                )
                try:
                    # Ready means consumer groups work too: asking a group's offsets makes
                    # the broker create and load __consumer_offsets now. The first groups
                    # of a fresh broker otherwise meet a coordinator still loading, and
                    # kafka-python consumers were seen to stall on it.
                    if admin.describe_cluster().get("brokers"):
                        admin.list_group_offsets({"fraud-broker-ready": None})
                        return
                finally:
                    admin.close()
            except (KafkaError, OSError):
                pass
            time.sleep(0.5)
        raise BrokerUnavailableError(
            f"kafka broker did not answer at {self.bootstrap_servers} within "
            f"{self.start_timeout_s:.0f}s (log: {self.data_dir})"
        )

    def stop(self, timeout_s: float = 30.0, *, keep_data: bool = False) -> None:
        """SIGTERM (a controlled shutdown), then SIGKILL if it hangs; removes the data unless
        `keep_data` (start() then brings the same broker back)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused JVM would not act on SIGTERM
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("kafka broker ignored SIGTERM for %.0fs: killing it", timeout_s)
                proc.kill()
                proc.wait()
        if not keep_data:
            self._cleanup()

    def kill(self) -> None:
        """SIGKILL, as a crash would: no controlled shutdown, the data stays for start()."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def send_signal(self, sig: int) -> None:
        """Signal the running broker (SIGSTOP pauses it, SIGCONT resumes it)."""
        if self._proc is None:
            raise BrokerUnavailableError("the local broker is not running")
        self._proc.send_signal(sig)

    def _cleanup(self) -> None:
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


def main() -> None:
    """`make broker`: one line with the address, then nothing until Ctrl-C (only warnings:
    the Kafka client's INFO lines while it waits for the broker are not for the user).

    This process stops the broker cleanly (SIGTERM) when its own parent dies too: `make`
    killed with SIGKILL passes no signal on to the command it runs."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))  # this process: its parent's death
    with LocalBroker() as broker:
        print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}", flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        finally:
            print("stopping broker", flush=True)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    main()
