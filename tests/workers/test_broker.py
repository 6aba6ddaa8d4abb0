import os

import pytest

from fraud.errors import ConfigError
from workers.broker import LocalBroker

pytestmark = pytest.mark.integration


def test_a_second_broker_starts_answers_and_leaves_nothing_behind():
    from kafka import KafkaAdminClient

    broker = LocalBroker()
    broker.start()
    pid, data_dir = broker._proc.pid, broker.data_dir
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        assert admin.describe_cluster()["brokers"]
        admin.close()
    finally:
        broker.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the JVM is gone, not a zombie nor a stray
    assert not data_dir.exists()


def test_missing_jars_say_how_to_get_them(tmp_path):
    with pytest.raises(ConfigError, match="make kafka-jars"):
        LocalBroker(lib_dir=tmp_path).start()


def test_cluster_ids_never_look_like_an_option():
    from workers.broker import cluster_id

    ids = [cluster_id() for _ in range(2000)]  # about 1 in 64 random ids starts with '-'
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
