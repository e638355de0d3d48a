"""Django Task results in the database: written by the producer (READY) and
the worker (RUNNING, then SUCCESSFUL, FAILED, or READY again before a
retry), read back as the framework's ``TaskResult``, and pruned after the
backend's retention."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from ._compat import Task, TaskError, TaskResult, TaskResultDoesNotExist, TaskResultStatus
from .models import TaskRecord

#: Prune at most this often per process (seconds).
PRUNE_EVERY = 60.0
_pruned = {"at": 0.0}
_prune_lock = threading.Lock()


def record_enqueued(
    result_id: str, task: "Task[Any, Any]", args: List[Any], kwargs: Dict[str, Any], alias: str, enqueued_at: datetime
) -> None:
    TaskRecord.objects.create(
        id=result_id,
        task_path=task.module_path,
        backend=alias,
        queue_name=task.queue_name,
        priority=task.priority,
        run_after=task.run_after,
        status=TaskResultStatus.READY,
        args=args,
        kwargs=kwargs,
        enqueued_at=enqueued_at,
    )


def forget(result_id: str) -> None:
    """Drops a record whose message could not be published."""
    TaskRecord.objects.filter(id=result_id).delete()


def _save(result_id: str, defaults: Dict[str, Any], update: Any) -> TaskRecord:
    """Applies ``update`` to the record, creating it from ``defaults`` if the
    producer's row is missing (rolled back, or not committed yet).

    No read-then-write transaction: SQLite cannot upgrade its lock in one and
    fails at once with "database is locked". One message (one result) is
    handled by one consumer at a time, so nothing else writes this row now."""
    for _ in range(3):
        record = TaskRecord.objects.filter(id=result_id).first()
        try:
            if record is None:
                record = TaskRecord(id=result_id, **defaults)
                update(record)
                with transaction.atomic():
                    record.save(force_insert=True)
            else:
                update(record)
                record.save()
            return record
        except IntegrityError:
            # The producer's row appeared meanwhile: update it instead.
            continue
    raise RuntimeError(f"could not store the result of task {result_id}")


def record_started(result_id: str, defaults: Dict[str, Any], worker_id: str) -> TaskRecord:
    now = timezone.now()

    def update(r: TaskRecord) -> None:
        r.status = TaskResultStatus.RUNNING
        r.started_at = r.started_at or now
        r.last_attempted_at = now
        r.finished_at = None
        r.worker_ids = [*r.worker_ids, worker_id]

    return _save(result_id, defaults, update)


def record_outcome(
    result_id: str,
    defaults: Dict[str, Any],
    *,
    status: str,
    return_value: Any = None,
    error: Optional[TaskError] = None,
) -> TaskRecord:
    now = timezone.now()

    def update(r: TaskRecord) -> None:
        r.status = status
        if status in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED):
            r.finished_at = now
        r.return_value = return_value if status == TaskResultStatus.SUCCESSFUL else None
        if error is not None:
            r.errors = [
                *r.errors,
                {"exception_class_path": error.exception_class_path, "traceback": error.traceback},
            ]

    return _save(result_id, defaults, update)


def prune(retention: Optional[float]) -> int:
    """Deletes finished results older than ``retention`` seconds, at most
    once every :data:`PRUNE_EVERY` seconds per process."""
    if retention is None:
        return 0
    with _prune_lock:
        if time.monotonic() - _pruned["at"] < PRUNE_EVERY and _pruned["at"]:
            return 0
        _pruned["at"] = time.monotonic()
    cutoff = timezone.now() - timedelta(seconds=retention)
    deleted, _ = TaskRecord.objects.filter(finished_at__lt=cutoff).delete()
    return deleted


def as_task_result(record: TaskRecord) -> "TaskResult[Any, Any]":
    """The framework's view of a record."""
    try:
        task = import_string(record.task_path)
    except ImportError as exc:
        raise TaskResultDoesNotExist(f"task {record.task_path} of result {record.id} is gone: {exc}") from None
    if not isinstance(task, Task):
        raise TaskResultDoesNotExist(f"{record.task_path} (result {record.id}) is not a task")
    if task.queue_name != record.queue_name:
        task = task.using(queue_name=record.queue_name)
    result: "TaskResult[Any, Any]" = TaskResult(
        task=task,
        id=record.id,
        status=TaskResultStatus(record.status),
        enqueued_at=record.enqueued_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        last_attempted_at=record.last_attempted_at,
        args=record.args,
        kwargs=record.kwargs,
        backend=record.backend,
        errors=[TaskError(exception_class_path=e["exception_class_path"], traceback=e["traceback"]) for e in record.errors],
        worker_ids=list(record.worker_ids),
    )
    object.__setattr__(result, "_return_value", record.return_value)
    return result


def load(result_id: str) -> "TaskResult[Any, Any]":
    record = TaskRecord.objects.filter(id=result_id).first()
    if record is None:
        raise TaskResultDoesNotExist(result_id)
    return as_task_result(record)
