"""Workers in other processes: killed mid-handler, stopped by SIGTERM, forked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import pillarbox

from .conftest import BACKENDS, URLS
from .support import run_until

SHARED = [b for b in ("sqlite", "redis") if b in BACKENDS]
#: Every backend several processes share: a lease holds a message on the
#: embedded backend and Redis, the connection on RabbitMQ and Kafka.
CROSS_PROCESS = [b for b in ("sqlite", "redis", "amqp", "kafka") if b in BACKENDS]

WORKER = textwrap.dedent(
    """
    import sys, time, pathlib, pillarbox
    url, topic, marker = sys.argv[1:4]
    broker = pillarbox.connect(url)

    def handler(job):
        pathlib.Path(marker).write_text(str(job.attempt))
        time.sleep(float(sys.argv[4]))

    pillarbox.Worker(broker, topic, "g", handler, lease=1.0, poll_wait=0.05, shutdown_grace=10).run()
    print("stopped gracefully", flush=True)
    """
)


def start_worker(tmp_path: Path, url: str, topic: str, handler_seconds: float) -> "tuple[subprocess.Popen[str], Path]":
    marker = tmp_path / f"started-{time.monotonic_ns()}"
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, url, topic, str(marker), str(handler_seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the worker never started the handler"
    return process, marker


@pytest.mark.parametrize("backend", CROSS_PROCESS)
def test_a_worker_killed_mid_handler_loses_nothing(backend: str, tmp_path: Path, topic: str) -> None:
    url = URLS[backend](tmp_path)
    with pillarbox.connect(url) as broker:
        broker.ensure_group(topic, "g")
        broker.publish(topic, b"survivor")
        process, _ = start_worker(tmp_path, url, topic, 60)
        process.kill()
        process.wait(10)
        attempts = []
        # The same lease as the killed worker's: on Redis a pending message is
        # claimed once it has been idle for the claiming worker's lease.
        worker = pillarbox.Worker(
            broker, topic, "g", lambda job: attempts.append(job.attempt), lease=1.0, poll_wait=0.05
        )
        # On Kafka the dead consumer's partitions move after its session times out.
        run_until(worker, lambda: len(attempts) == 1, limit=60)
        assert attempts == [2]


def test_sigterm_lets_the_running_handler_finish(sqlite_url: str, tmp_path: Path, topic: str) -> None:
    with pillarbox.connect(sqlite_url) as broker:
        broker.ensure_group(topic, "g")
        broker.publish(topic, b"finish me")
        process, _ = start_worker(tmp_path, sqlite_url, topic, 1.0)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        assert process.returncode == 0 and "stopped gracefully" in out
        stats = broker.inspect(topic, "g")
        assert (stats.ready, stats.in_flight, stats.waiting) == (0, 0, 0)


def test_a_broker_opened_before_fork_works_in_the_child(sqlite_url: str, topic: str) -> None:
    broker = pillarbox.connect(sqlite_url)
    broker.ensure_group(topic, "g")
    broker.publish(topic, b"from the parent")
    pid = os.fork()
    if pid == 0:  # the child: a publish and an inspection through the parent's handle
        code = 1
        try:
            broker.publish(topic, b"from the child")
            code = 0 if broker.inspect(topic, "g").ready == 2 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert broker.inspect(topic, "g").ready == 2
    broker.close()


def test_ctrl_c_interrupts_a_blocking_call(tmp_path: Path) -> None:
    import socket

    # A server that accepts and never answers: the Redis handshake waits.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    marker = tmp_path / "connecting"
    script = textwrap.dedent(
        f"""
        import pathlib, pillarbox
        pathlib.Path({str(marker)!r}).touch()
        pillarbox.connect("redis://127.0.0.1:{port}?connect_timeout_ms=60000&response_timeout_ms=60000")
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
        assert time.monotonic() - started < 5
        assert "KeyboardInterrupt" in err
    finally:
        process.kill()
        silent.close()


RACER = textwrap.dedent(
    """
    import sys, time, pathlib, pillarbox
    url, topic, effects, ready = sys.argv[1:5]
    broker = pillarbox.connect(url)

    def pay(job):
        time.sleep(0.4)
        with open(effects, "a") as f:
            f.write(job.id + "\\n")

    worker = pillarbox.Worker(broker, topic, "g", pay, lease=2.0, poll_wait=0.05, busy_key_delay=0.2)
    pathlib.Path(ready).touch()
    worker.run()
    """
)


@pytest.mark.parametrize("backend", SHARED)
def test_two_worker_processes_racing_on_one_key_run_it_once(backend: str, tmp_path: Path, topic: str) -> None:
    url = URLS[backend](tmp_path)
    effects = tmp_path / "effects"
    with pillarbox.connect(url) as broker:
        broker.ensure_group(topic, "g")
        racers = []
        for n in range(2):
            ready = tmp_path / f"ready-{n}"
            racers.append(
                subprocess.Popen([sys.executable, "-c", RACER, url, topic, str(effects), str(ready)])
            )
            deadline = time.monotonic() + 30
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        try:
            broker.publish_many(
                topic,
                [pillarbox.Message(b"pay", idempotency_key="pay-1"), pillarbox.Message(b"pay", idempotency_key="pay-1")],
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                stats = broker.inspect(topic, "g")
                if stats.ready == 0 and stats.in_flight == 0 and stats.waiting == 0 and effects.exists():
                    break
                time.sleep(0.1)
        finally:
            for racer in racers:
                racer.send_signal(signal.SIGTERM)
            for racer in racers:
                racer.wait(30)
        assert [r.returncode for r in racers] == [0, 0]
        assert len(effects.read_text().splitlines()) == 1, effects.read_text()
