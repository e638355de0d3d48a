"""The brokers the tests run against: the ones `tests/run.sh` starts on
127.0.0.1 (the same as the Rust tests), and the embedded backends.

`PILLARBOX_TEST_BACKENDS=memory,sqlite` limits the run to some of them.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Dict

import pytest

URLS: Dict[str, Callable[[Path], str]] = {
    "memory": lambda tmp: f"memory://py-{uuid.uuid4().hex}",
    "sqlite": lambda tmp: f"sqlite://{tmp / 'queue.db'}?synchronous=normal",
    "redis": lambda tmp: os.environ.get("PILLARBOX_REDIS_URL", "redis://127.0.0.1:6390"),
    # tests/brokers/start-redis-cluster.sh: three primaries, three replicas.
    "redis_cluster": lambda tmp: os.environ.get(
        "PILLARBOX_REDIS_CLUSTER_URL", "redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
    ),
    # tests/brokers/start-redis-sentinel.sh: a primary, a replica, three sentinels.
    "redis_sentinel": lambda tmp: os.environ.get(
        "PILLARBOX_REDIS_SENTINEL_URL", "redis+sentinel://127.0.0.1:27201,127.0.0.1:27202,127.0.0.1:27203/pillarbox"
    ),
    "amqp": lambda tmp: os.environ.get(
        "PILLARBOX_AMQP_URL", "amqp://guest:guest@127.0.0.1:5673/%2f?management_port=15673&stats_delay_ms=5000"
    ),
    "kafka": lambda tmp: os.environ.get("PILLARBOX_KAFKA_URL", "kafka://127.0.0.1:19092"),
}

BACKENDS = [b for b in os.environ.get("PILLARBOX_TEST_BACKENDS", ",".join(URLS)).split(",") if b]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A broker URL, once per backend."""
    return URLS[request.param](tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An embedded database file several processes can share."""
    return URLS["sqlite"](tmp_path)


@pytest.fixture
def topic() -> str:
    """A topic of the test's own."""
    return f"py.{uuid.uuid4().hex[:12]}"
