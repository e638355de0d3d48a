"""How ``pillarbox_worker`` runs one message: a task of the project's app
(``@pillarbox.django.task``) or a Django Task (``@django.tasks.task``), with
stale database connections closed around it as Django's request cycle does,
and Django Task results stored as they go."""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from typing import Any, Callable, Dict, Optional

from django.apps import apps
from django.db import close_old_connections
from django.utils.module_loading import import_string

from .._handlers import Fatal
from ..tasks import TASK_HEADER, App

log = logging.getLogger("pillarbox.django")

#: Names this worker in a Django Task's ``worker_ids``.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
#: The message header naming the enqueue (the TaskResult's id).
RESULT_ID_HEADER = "django-task-id"
#: The message header naming the TASKS alias that enqueued it.
BACKEND_HEADER = "django-task-backend"


def handler(app: App, topic: str) -> Callable[[Any], None]:
    """The handler of ``topic``'s messages: the app's dispatch, with stale
    database connections closed around it and each outcome logged."""

    def run(job: Any) -> None:
        close_old_connections()
        started = time.monotonic()
        name = job.message.headers.get(TASK_HEADER, "?")
        try:
            app.run(job)
        except Exception as exc:
            log.warning(
                "task %s (message %s, attempt %d of %d) failed: %s: %s",
                name, job.id, job.attempt, job.max_attempts, type(exc).__name__, exc,
            )
            raise
        else:
            log.info("task %s (message %s) done in %.3fs", name, job.id, time.monotonic() - started)
        finally:
            close_old_connections()

    return run


def find_django_task(path: str) -> Optional[Any]:
    """The Django Task at ``path``, imported only from an installed app's
    package: a message never makes the worker import arbitrary modules."""
    from ._compat import AVAILABLE, Task

    if not AVAILABLE or "." not in path:
        return None
    if not any(path.startswith(f"{config.name}.") for config in apps.get_app_configs()):
        return None
    try:
        found = import_string(path)
    except ImportError:
        return None
    return found if isinstance(found, Task) else None


def run_django_task(task: Any, job: Any, args: Any, kwargs: Dict[str, Any]) -> None:
    """Runs a Django Task, sending the framework's signals and storing its
    result: RUNNING, then SUCCESSFUL, FAILED on the last attempt, or READY
    again when Pillarbox will retry."""
    # Results are models: imported once the app registry is ready, not with this module.
    from . import _compat, results

    headers = job.message.headers
    result_id = headers.get(RESULT_ID_HEADER) or job.id
    alias = headers.get(BACKEND_HEADER) or task.backend
    backend = _compat.task_backends[alias] if alias in _compat.task_backends.settings else None
    # Results are stored where a Pillarbox backend enqueued the task with its id.
    store = bool(getattr(backend, "store_results", False)) and RESULT_ID_HEADER in headers
    defaults = {
        "task_path": task.module_path,
        "backend": alias,
        "queue_name": task.queue_name,
        "args": args,
        "kwargs": kwargs,
        "enqueued_at": job.message.published_at,
    }
    status = _compat.TaskResultStatus
    if store:
        record = results.record_started(result_id, defaults, WORKER_ID)
        result = results.as_task_result(record)
    else:
        result = _compat.TaskResult(
            task=task, id=result_id, status=status.RUNNING, enqueued_at=job.message.published_at,
            started_at=None, finished_at=None, last_attempted_at=None, args=args, kwargs=kwargs,
            backend=alias, errors=[], worker_ids=[WORKER_ID] * job.attempt,
        )
    _compat.task_started.send(type(backend), task_result=result)
    try:
        if task.takes_context:
            value = task.call(_compat.TaskContext(task_result=result), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
        try:
            value = _compat.normalize_json(value)
        except (TypeError, ValueError) as exc:
            # Running it again gives the same value: no retry can help.
            raise Fatal(f"the return value of {task.module_path} is not JSON: {exc}", kind="TypeError") from exc
    except Exception as exc:
        final = job.is_last_attempt or isinstance(exc, Fatal)
        error = _compat.TaskError(
            exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        )
        if store:
            record = results.record_outcome(
                result_id, defaults, status=status.FAILED if final else status.READY, error=error
            )
            result = results.as_task_result(record)
        if final:
            object.__setattr__(result, "status", status.FAILED)
            _compat.task_finished.send(type(backend), task_result=result)
        raise
    if store:
        record = results.record_outcome(result_id, defaults, status=status.SUCCESSFUL, return_value=value)
        result = results.as_task_result(record)
        results.prune(getattr(backend, "result_retention", None))
    else:
        object.__setattr__(result, "status", status.SUCCESSFUL)
    _compat.task_finished.send(type(backend), task_result=result)
