"""A backend for Django's Tasks framework that publishes through Pillarbox.

::

    TASKS = {
        "default": {
            "BACKEND": "pillarbox.django.PillarboxBackend",
            "QUEUES": ["default", "emails"],          # each queue is a Pillarbox topic
            "OPTIONS": {"result_retention": 86400},
        }
    }

``task.enqueue(...)`` publishes the task layer's JSON envelope (never a
pickle) to the topic of the task's queue; ``manage.py pillarbox_worker``
runs it with Pillarbox's retries, dead letters and idempotency (each enqueue
runs once, however often its message is delivered).

What the framework asks of a backend, and what this one does:

- ``run_after``: supported (the message's delivery time);
- ``priority``: not supported (no Pillarbox backend orders by priority;
  ``supports_priority = False``, so the framework refuses a non-default
  priority instead of ignoring it): use a queue of its own for urgent tasks;
- ``queue_name``: supported (the topic ``topic_prefix + queue_name``);
- async tasks: supported (run with ``asyncio`` in the worker);
- results: stored by the worker in the ``pillarbox`` app's table and pruned
  after ``result_retention`` seconds (``store_results: False`` turns this off,
  and ``get_result`` with it).
"""

from __future__ import annotations

import uuid
from typing import Any, Dict, Iterable, List, Optional

from django.core.checks import CheckMessage, Error
from django.utils import timezone

from ..tasks import TASK_HEADER, envelope
from . import _compat
from .project import get_app
from .runner import BACKEND_HEADER, RESULT_ID_HEADER
from ._compat import BaseTaskBackend, Task, TaskResult, TaskResultStatus

_compat.require()

#: This backend's OPTIONS, with their defaults.
OPTIONS: Dict[str, Any] = {
    # Topics are ``topic_prefix + queue_name`` (namespaces projects sharing a broker).
    "topic_prefix": "",
    # Whether the worker stores results, for ``get_result``.
    "store_results": True,
    # Seconds a finished result is kept (None: forever).
    "result_retention": 7 * 24 * 3600,
}


class PillarboxBackend(BaseTaskBackend):
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = False

    def __init__(self, alias: str, params: Dict[str, Any]) -> None:
        super().__init__(alias, params)
        known = {**OPTIONS, **{k: v for k, v in self.options.items() if k in OPTIONS}}
        self.topic_prefix: str = known["topic_prefix"]
        self.store_results: bool = bool(known["store_results"])
        self.result_retention: Optional[float] = known["result_retention"]
        # Declared per instance: a backend that stores nothing cannot get results.
        self.supports_get_result = self.store_results

    def topic(self, queue_name: str) -> str:
        """The Pillarbox topic of a queue."""
        return f"{self.topic_prefix}{queue_name}"

    def topics(self) -> List[str]:
        """The topics of the configured queues (``QUEUES``)."""
        return sorted(self.topic(q) for q in self.queues)

    def enqueue(self, task: "Task[Any, Any]", args: Any, kwargs: Any) -> "TaskResult[Any, Any]":
        self.validate_task(task)
        args, kwargs = list(args), dict(kwargs)
        result_id = uuid.uuid4().hex
        payload = envelope(task.module_path, args, kwargs)  # TypeError for non-JSON arguments
        enqueued_at = timezone.now()
        if self.store_results:
            from . import results

            results.record_enqueued(result_id, task, args, kwargs, self.alias, enqueued_at)
        topic = self.topic(task.queue_name)
        app = get_app()
        try:
            app.ensure_topic(topic)
            app.broker.publish(
                topic,
                payload,
                # Pillarbox's idempotency: this enqueue runs once however
                # often its message is delivered.
                idempotency_key=f"django-task:{result_id}",
                headers={TASK_HEADER: task.module_path, RESULT_ID_HEADER: result_id, BACKEND_HEADER: self.alias},
                content_type="application/json",
                deliver_at=task.run_after,
            )
        except BaseException:
            if self.store_results:
                results.forget(result_id)
            raise
        result: "TaskResult[Any, Any]" = TaskResult(
            task=task,
            id=result_id,
            status=TaskResultStatus.READY,
            enqueued_at=enqueued_at,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        _compat.task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> "TaskResult[Any, Any]":
        if not self.store_results:
            raise NotImplementedError(
                f"the tasks backend {self.alias!r} has OPTIONS store_results=False: it keeps no results"
            )
        from . import results

        return results.load(result_id)

    def check(self, **kwargs: Any) -> List[Any]:
        messages: List[CheckMessage] = list(super().check(**kwargs))
        for name in self.options:
            if name not in OPTIONS:
                messages.append(
                    Error(
                        f"TASKS[{self.alias!r}]['OPTIONS'] has an unknown option {name!r}",
                        hint=f"PillarboxBackend's options: {', '.join(sorted(OPTIONS))}",
                        id="pillarbox.E010",
                    )
                )
        prefix = self.options.get("topic_prefix", "")
        if not isinstance(prefix, str):
            messages.append(Error("OPTIONS['topic_prefix'] must be a string", id="pillarbox.E011"))
        retention = self.options.get("result_retention", OPTIONS["result_retention"])
        if retention is not None and (isinstance(retention, bool) or not isinstance(retention, (int, float)) or retention <= 0):
            messages.append(
                Error(
                    f"TASKS[{self.alias!r}]['OPTIONS']['result_retention'] must be seconds > 0 or None, not {retention!r}",
                    id="pillarbox.E011",
                )
            )
        from django.apps import apps

        if self.store_results and not apps.is_installed("pillarbox.django"):
            messages.append(
                Error(
                    "PillarboxBackend stores task results in the pillarbox.django app's table",
                    hint="add 'pillarbox.django' to INSTALLED_APPS (or set OPTIONS store_results=False)",
                    id="pillarbox.E012",
                )
            )
        return messages
