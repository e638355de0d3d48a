"""Django's Tasks framework: built into Django 6 (``django.tasks``), and the
``django-tasks`` backport on Django 5.2. Same API, two import paths."""

from __future__ import annotations

from typing import Any

try:
    from django.tasks import Task, TaskContext, TaskResult, TaskResultStatus, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    FRAMEWORK = "django.tasks"
except ImportError:  # Django 5.2: the backport, if installed
    try:
        from django_tasks import task_backends  # type: ignore[no-redef,import-not-found,unused-ignore]
        from django_tasks.base import (  # type: ignore[no-redef,import-not-found,unused-ignore]
            Task,
            TaskContext,
            TaskResult,
            TaskResultStatus,
        )
        from django_tasks.backends.base import BaseTaskBackend  # type: ignore[no-redef,import-not-found,unused-ignore]
        from django_tasks.base import TaskError  # type: ignore[no-redef,import-not-found,unused-ignore]
        from django_tasks.exceptions import InvalidTaskError as InvalidTask  # type: ignore[no-redef,import-not-found,unused-ignore]
        from django_tasks.exceptions import TaskResultDoesNotExist  # type: ignore[no-redef,import-not-found,unused-ignore]
        from django_tasks.signals import task_enqueued, task_finished, task_started  # type: ignore[no-redef,import-not-found,unused-ignore]
        from django_tasks.utils import normalize_json  # type: ignore[no-redef,import-not-found,unused-ignore]

        FRAMEWORK = "django_tasks"
    except ImportError:
        FRAMEWORK = ""

AVAILABLE = bool(FRAMEWORK)

__all__ = [
    "AVAILABLE",
    "FRAMEWORK",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]


def require() -> None:
    """Raises a clear error when neither Django 6 nor the backport is installed."""
    if not AVAILABLE:
        raise ImportError(
            "pillarbox.django.PillarboxBackend needs Django's Tasks framework: Django 6 or newer, "
            "or the django-tasks backport (pip install django-tasks) on Django 5.2"
        )


