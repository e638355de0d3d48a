"""The task layer: an envelope every language reads, and the worker command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import pillarbox
from pillarbox.tasks import envelope, read_envelope


def test_the_envelope_is_plain_json() -> None:
    body = envelope("emails.send", ["ada@example.com"], {"lang": "en"})
    assert json.loads(body) == {"task": "emails.send", "args": ["ada@example.com"], "kwargs": {"lang": "en"}}
    assert read_envelope(body) == ("emails.send", ["ada@example.com"], {"lang": "en"})
    with pytest.raises(ValueError):
        read_envelope(b'{"args": []}')
    with pytest.raises(TypeError):
        envelope("x", [object()], {})


def test_tasks_of_one_topic_share_one_retry_policy() -> None:
    app = pillarbox.App("memory://")
    app.task(max_retries=5)(lambda: None)
    with pytest.raises(ValueError, match="share one policy"):
        app.task(name="other", max_retries=2)(lambda: None)
    app.task(name="elsewhere", topic="slow", max_retries=2)(lambda: None)
    assert app.topics() == ["slow", "tasks"]


def test_a_task_registered_elsewhere_is_called_by_name(tmp_path: Path) -> None:
    app = pillarbox.App(f"sqlite://{tmp_path / 'tasks.db'}")
    remote = app.signature("reports.build", topic="reports")
    assert (remote.name, remote.topic) == ("reports.build", "reports")
    remote.apply_async([7], {"fmt": "pdf"}, idempotency_key="report-7")
    # The group that runs the topic's tasks was made before the call went out.
    assert app.broker.groups("reports") == ["workers"]
    assert app.broker.inspect("reports", "workers").ready == 1
    assert "reports.build" not in app.tasks, "a signature is not run by this app's workers"
    with pytest.raises(TypeError, match="runs in another worker"):
        remote(7)


TASKS = textwrap.dedent(
    """
    import pathlib, pillarbox
    app = pillarbox.App("{url}")
    out = pathlib.Path("{out}")

    @app.task(name="greet", idempotency_key=lambda who, **kw: "greet-" + who)
    def greet(who, punctuation="!"):
        with out.open("a") as f:
            f.write("hello " + who + punctuation + "\\n")

    @app.task(name="flaky", topic="flaky", retry=pillarbox.RetryPolicy(max_retries=1, initial_delay=0.05, jitter=0))
    def flaky():
        raise RuntimeError("always")
    """
)


def test_the_worker_command_runs_tasks_and_stops_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'tasks.db'}"
    out = tmp_path / "out.txt"
    (tmp_path / "mytasks.py").write_text(TASKS.format(url=url, out=out))
    sys.path.insert(0, str(tmp_path))
    try:
        import mytasks  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    mytasks.greet.delay("ada", punctuation=".")
    mytasks.greet.delay("ada", punctuation="?")  # same idempotency key: one of the two runs
    mytasks.greet.apply_async(["bob"], countdown=0.2)
    mytasks.flaky.delay()
    worker = subprocess.Popen(
        [sys.executable, "-m", "pillarbox", "worker", "mytasks:app", "--concurrency", "2"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    broker = mytasks.app.broker
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        lines = out.read_text().splitlines() if out.exists() else []
        if len(lines) >= 2 and broker.inspect("flaky", "workers").dead_letters == 1:
            break
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    # One of the two calls sharing an idempotency key ran (either may claim it
    # first with two handlers at once), and the other call.
    lines = sorted(out.read_text().splitlines())
    assert len(lines) == 2 and lines[0] in ("hello ada.", "hello ada?") and lines[1] == "hello bob!", lines
    dead = broker.dead_letters("flaky", "workers")
    assert [(d.reason.error_kind, d.reason.attempts) for d in dead] == [("RuntimeError", 2)]
