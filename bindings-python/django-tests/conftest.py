"""Fixtures of the Django tests: a worker subprocess, waiting with a deadline,
users for the admin. The broker is the one settings.py reads from
PILLARBOX_TEST_URL (tests/suites/django.sh runs the suite once per backend)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

HERE = Path(__file__).resolve().parent


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "the condition") -> Any:
    """Polls ``predicate`` until it returns something truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last value: {value!r})")
        time.sleep(0.05)


class WorkerProcess:
    """``manage.py pillarbox_worker`` in a subprocess, its output in a file."""

    def __init__(self, *args: str) -> None:
        self.log_path = Path(os.environ.get("PILLARBOX_TEST_DIR", HERE / ".run")) / f"worker-{uuid.uuid4().hex[:8]}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "pillarbox_worker", *args],
            cwd=HERE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_started(self) -> None:
        wait_for(lambda: "pillarbox worker running" in self.output() or self.process.poll() is not None,
                 what="the worker to start")
        assert self.process.poll() is None, f"the worker exited: {self.output()}"

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the worker did not stop within {timeout}s of SIGTERM:\n{self.output()}")
        self.log.close()
        return code


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerProcess]]:
    started: List[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        w = WorkerProcess(*args)
        started.append(w)
        w.wait_started()
        return w

    yield start
    for w in started:
        if w.process.poll() is None:
            w.stop()


@pytest.fixture
def dead_letters_on() -> Callable[..., str]:
    """Makes dead letters on a fresh topic of the project's group: each
    payload names the error kind its handler fails with."""
    import pillarbox
    from pillarbox.django import get_app

    def make(kinds: List[str]) -> str:
        app = get_app()
        topic = f"{os.environ.get('PILLARBOX_TEST_PREFIX', 't-')}admin-{uuid.uuid4().hex[:8]}"
        app.broker.ensure_group(topic, app.group)
        for i, kind in enumerate(kinds):
            app.broker.publish(topic, f"{kind}:{i}")

        def fail(job: Any) -> None:
            kind, _, n = job.text().partition(":")
            raise pillarbox.Fatal(f"{kind} failure number {n}", kind=kind)

        worker = pillarbox.Worker(app.broker, topic, app.group, fail)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: app.broker.inspect(topic, app.group).dead_letters == len(kinds), what="dead letters")
        finally:
            worker.shutdown()
            thread.join(10)
        return topic

    return make
