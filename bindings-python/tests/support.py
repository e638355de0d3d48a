"""Helpers the tests share."""

from __future__ import annotations

import threading
import time

import pillarbox


def run_until(worker: pillarbox.Worker, done, limit: float = 30.0) -> None:
    """Runs ``worker`` on a thread until ``done()`` or ``limit`` seconds, then stops it."""
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + limit
    try:
        while not done() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.shutdown()
        thread.join(30)
    assert done(), f"not done after {limit}s: {worker.stats}"


def wait_stats(broker: pillarbox.Broker, topic: str, group: str, expect, limit: float = 20.0):
    """Inspection figures once they satisfy ``expect`` (some backends refresh
    them periodically: RabbitMQ's management API every 5 s here); fails the
    test if they never do within ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while True:
        stats = broker.inspect(topic, group)
        if expect(stats):
            return stats
        assert time.monotonic() < deadline, f"the figures never settled as expected: {stats}"
        time.sleep(0.1)
