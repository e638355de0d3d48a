"""``manage.py pillarbox_worker`` as a subprocess: both kinds of task run,
results are stored, retries and dead letters happen, logs go through
LOGGING, and SIGTERM lets a running task finish."""

from __future__ import annotations

import uuid
from typing import Any, Callable

import pytest
from django.conf import settings

from pillarbox.django import _compat, get_app
from pillarbox.django.models import TaskRecord
from testproject.shop import tasks
from testproject.shop.models import Event

from conftest import wait_for

Status = _compat.TaskResultStatus


def finished(task: Any, result_id: str) -> Any:
    r = task.get_result(result_id)
    return r if r.is_finished else None


@pytest.mark.django_db(transaction=True)
def test_the_worker_runs_both_kinds_of_task_with_retries_and_dead_letters(start_worker: Callable[..., Any]) -> None:
    app = get_app()
    name = f"rec-{uuid.uuid4().hex[:6]}"
    worker = start_worker("--concurrency", "2")

    tasks.record.delay(name, "celery-style")
    added = tasks.add.enqueue(20, 22)
    recovers = tasks.flaky_email.enqueue("ada@example.com", 1)   # fails once, then succeeds
    gives_up = tasks.flaky_email.enqueue("bob@example.com", 99)  # fails on every attempt
    doubled = tasks.async_double.enqueue(21)

    wait_for(lambda: Event.objects.filter(name=name, value="celery-style").exists(), what="the Celery-style task")
    ok = wait_for(lambda: finished(tasks.add, added.id), what="add's result")
    assert ok.status == Status.SUCCESSFUL and ok.return_value == 42 and ok.attempts == 1
    assert Event.objects.filter(name="add", value="42").exists()

    ok = wait_for(lambda: finished(tasks.flaky_email, recovers.id), what="the email that recovers")
    assert ok.status == Status.SUCCESSFUL, ok.errors
    assert ok.return_value == "sent to ada@example.com"
    assert ok.attempts == 2 and len(ok.errors) == 1
    assert ok.errors[0].exception_class_path == "builtins.ConnectionError"
    assert "SMTP down (attempt 1)" in ok.errors[0].traceback

    bad = wait_for(lambda: finished(tasks.flaky_email, gives_up.id), what="the email that fails")
    # MAX_RETRIES is 2 in the test settings: three attempts, then a dead letter.
    assert bad.status == Status.FAILED and bad.attempts == 3 and len(bad.errors) == 3
    with pytest.raises(ValueError):
        bad.return_value
    emails = f"{settings.PREFIX}emails"
    letters = wait_for(lambda: app.broker.dead_letters(emails, app.group), what="the dead letter")
    mine = [d for d in letters if d.message.headers.get("django-task-id") == gives_up.id]
    assert len(mine) == 1 and mine[0].reason.error_kind == "ConnectionError" and mine[0].reason.attempts == 3

    ok = wait_for(lambda: finished(tasks.async_double, doubled.id), what="the async task")
    assert ok.status == Status.SUCCESSFUL and ok.return_value == 42

    # The Celery-style task with max_retries=1 on a topic of its own: two attempts, then a dead letter.
    tasks.always_fails.delay(name)
    flaky = tasks.always_fails.topic
    wait_for(
        lambda: any(name in d.reason.error_message for d in app.broker.dead_letters(flaky, app.group, limit=1000)),
        what="the Celery-style dead letter",
    )
    assert Event.objects.filter(name=name, value="attempt").count() == 2

    assert worker.stop() == 0
    out = worker.output()
    # Through the LOGGING setting's formatter.
    assert f"[testproject] INFO pillarbox.django: task testproject.shop.tasks.add" in out, out
    assert "[testproject] WARNING pillarbox.django: task testproject.shop.tasks.flaky_email" in out
    assert "SIGTERM received: shutting down gracefully" in out
    assert TaskRecord.objects.filter(status="SUCCESSFUL").count() >= 3


@pytest.mark.django_db(transaction=True)
def test_sigterm_lets_the_running_task_finish(start_worker: Callable[..., Any]) -> None:
    name = f"slow-{uuid.uuid4().hex[:6]}"
    worker = start_worker("--topics", tasks.slow.topic, "--concurrency", "1")
    tasks.slow.delay(name, 1.5)
    wait_for(lambda: Event.objects.filter(name=name, value="started").exists(), what="the slow task to start")
    assert worker.stop(timeout=20) == 0
    assert Event.objects.filter(name=name, value="finished").exists(), worker.output()
    assert "pillarbox worker stopped" in worker.output()


def test_the_worker_refuses_a_bad_concurrency() -> None:
    import subprocess
    import sys

    from conftest import HERE

    done = subprocess.run(
        [sys.executable, "manage.py", "pillarbox_worker", "--concurrency", "0"],
        cwd=HERE, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1 and "--concurrency must be at least 1" in done.stderr
