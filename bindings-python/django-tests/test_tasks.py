"""Autodiscovery, the Celery-style tasks and publishing on commit, and the
Django Tasks backend's producer side (no worker running here)."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import timedelta
from typing import Any, List

import pillarbox
import pytest
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from pillarbox.django import _compat, get_app, publish_on_commit
from pillarbox.django.models import TaskRecord
from testproject.shop import tasks
from testproject.shop.models import Order

from conftest import wait_for


def ready(topic: str) -> int:
    app = get_app()
    app.ensure_topic(topic)
    return app.broker.inspect(topic, app.group).ready


def test_tasks_modules_are_discovered() -> None:
    names = set(get_app().tasks)
    assert {"testproject.shop.tasks.record", "testproject.shop.tasks.always_fails"} <= names
    assert isinstance(tasks.record, pillarbox.django.DjangoTask)


def test_the_project_topics_include_the_django_task_queues() -> None:
    p = settings.PREFIX
    assert get_app().topics() == sorted([f"{p}tasks", f"{p}tasks-flaky", f"{p}default", f"{p}emails"])


@pytest.mark.django_db(transaction=True)
def test_delay_on_commit_publishes_after_commit() -> None:
    topic = tasks.record.topic
    before = ready(topic)
    with transaction.atomic():
        Order.objects.create(email="ada@example.com")
        tasks.record.delay_on_commit("order", "ada")
        assert ready(topic) == before, "published before the commit"
    wait_for(lambda: ready(topic) == before + 1, what="the message after the commit")


@pytest.mark.django_db(transaction=True)
def test_delay_on_commit_publishes_nothing_on_rollback() -> None:
    topic = tasks.record.topic
    before = ready(topic)
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            Order.objects.create(email="bob@example.com")
            tasks.record.delay_on_commit("order", "bob")
            tasks.record.apply_async_on_commit(("order", "bob"), countdown=1)
            raise RuntimeError("rolled back")
    assert Order.objects.count() == 0
    # A publish on commit would be synchronous: the count is final now.
    assert ready(topic) == before
    tasks.record.delay_on_commit("after", "x")  # outside a transaction: at once
    assert ready(topic) == before + 1


@pytest.mark.django_db(transaction=True)
def test_publish_on_commit_follows_the_transaction() -> None:
    topic = f"{settings.PREFIX}raw-{uuid.uuid4().hex[:8]}"
    before = ready(topic)
    with transaction.atomic():
        publish_on_commit(topic, b"kept", key="k")
        with pytest.raises(ValueError):
            with transaction.atomic():  # a savepoint rolled back: its publish is dropped
                publish_on_commit(topic, b"dropped")
                raise ValueError
        assert ready(topic) == before
    assert ready(topic) == before + 1


@pytest.mark.django_db(transaction=True)
def test_enqueue_publishes_the_json_envelope_with_its_result_id() -> None:
    app = get_app()
    topic = f"{settings.PREFIX}default"
    group = f"peek-{uuid.uuid4().hex[:8]}"
    app.broker.ensure_group(topic, group)
    result = tasks.add.enqueue(2, b=3)
    seen: List[Any] = []

    def take(job: Any) -> None:
        seen.append(job)

    worker = pillarbox.Worker(app.broker, topic, group, take)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: any(j.message.headers.get("django-task-id") == result.id for j in seen), what="the message")
    finally:
        worker.shutdown()
        thread.join(10)
    job = next(j for j in seen if j.message.headers.get("django-task-id") == result.id)
    assert json.loads(job.payload) == {"task": "testproject.shop.tasks.add", "args": [2], "kwargs": {"b": 3}}
    assert job.message.content_type == "application/json"
    assert job.message.headers["task"] == "testproject.shop.tasks.add"
    assert job.message.idempotency_key == f"django-task:{result.id}"
    assert result.status == _compat.TaskResultStatus.READY
    stored = tasks.add.get_result(result.id)
    assert stored.status == _compat.TaskResultStatus.READY and stored.args == [2] and stored.kwargs == {"b": 3}


@pytest.mark.django_db(transaction=True)
def test_run_after_delays_the_message() -> None:
    app = get_app()
    topic = f"{settings.PREFIX}emails"
    app.ensure_topic(topic)
    before = app.broker.inspect(topic, app.group)
    later = timezone.now() + timedelta(hours=1)
    result = tasks.flaky_email.using(run_after=later).enqueue("later@example.com", 0)
    after = app.broker.inspect(topic, app.group)
    assert after.waiting == before.waiting + 1 and after.ready == before.ready
    assert TaskRecord.objects.get(id=result.id).run_after == later


def test_priority_is_declared_unsupported() -> None:
    backend = _compat.task_backends["default"]
    assert backend.supports_priority is False
    assert backend.supports_defer and backend.supports_async_task and backend.supports_get_result
    with pytest.raises(_compat.InvalidTask, match="priority"):
        tasks.add.using(priority=10)


def test_queues_outside_QUEUES_are_refused() -> None:
    with pytest.raises(_compat.InvalidTask, match="Queue 'reports'"):
        tasks.add.using(queue_name="reports")


@pytest.mark.django_db(transaction=True)
def test_arguments_must_be_json() -> None:
    with pytest.raises(TypeError, match="must be JSON"):
        tasks.add.enqueue(object(), 1)
    with pytest.raises(TypeError, match="must be JSON"):
        tasks.record.delay(object())
    assert TaskRecord.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_aenqueue() -> None:
    result = asyncio.run(tasks.async_double.aenqueue(21))
    assert tasks.async_double.get_result(result.id).status == _compat.TaskResultStatus.READY


@pytest.mark.django_db(transaction=True)
def test_get_result_of_an_unknown_id() -> None:
    with pytest.raises(_compat.TaskResultDoesNotExist):
        tasks.add.get_result("nope")


def test_the_worker_closes_stale_connections_around_each_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from pillarbox.django import runner

    calls: List[str] = []
    monkeypatch.setattr(runner, "close_old_connections", lambda: calls.append("close"))
    monkeypatch.setattr(tasks.record, "fn", lambda *a: calls.append("task"))

    class Job:
        payload = json.dumps({"task": "testproject.shop.tasks.record", "args": ["a"], "kwargs": {}}).encode()
        id, attempt, max_attempts = "m1", 1, 3

        class message:
            headers = {"task": "testproject.shop.tasks.record"}

    runner.handler(get_app(), tasks.record.topic)(Job())
    assert calls == ["close", "task", "close"]


def test_the_schedules_setting_is_synced_on_the_task_topics() -> None:
    from django.test.utils import override_settings

    app = get_app()
    name = f"record-every-minute-{uuid.uuid4().hex[:8]}"
    schedules = {name: {"task": tasks.record.name, "every": 60, "args": ["tick"], "misfire": "skip"}}
    with override_settings(PILLARBOX={**settings.PILLARBOX, "SCHEDULES": schedules}):
        assert app.sync_schedules() == {name: "created"}
        assert app.sync_schedules() == {name: "unchanged"}
    (info,) = [s for s in app.broker.schedules() if s.name == name]
    assert info.topic == tasks.record.topic and info.misfire == "skip"
    assert app.broker.remove_schedule(name)
