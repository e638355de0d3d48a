"""The project's Pillarbox settings, with their defaults.

``PILLARBOX_URL`` is its own setting (often read from the environment);
everything else lives in the ``PILLARBOX`` dict, so that a misspelt key is
reported by ``manage.py check`` instead of being ignored.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Dict, List, Optional

from django.conf import settings

from .. import _native
from .._worker import RetryPolicy

_APP = _native.DEFAULTS["app"]
_RETRY = _native.DEFAULTS["retry"]
_WORKER = _native.DEFAULTS["worker"]

#: Every key of the ``PILLARBOX`` setting, with its default (the core's,
#: read from the native module: none is written here).
DEFAULTS: Dict[str, Any] = {
    # Where ``@pillarbox.django.task`` tasks go unless they name a topic.
    "TOPIC": _APP["default_topic"],
    # The group that runs the project's tasks on each topic.
    "GROUP": _APP["group"],
    # Retries after the first attempt, and their backoff (seconds).
    "MAX_RETRIES": _RETRY["max_retries"],
    "RETRY_DELAY": _RETRY["initial_delay"],
    "RETRY_MULTIPLIER": _RETRY["multiplier"],
    "RETRY_MAX_DELAY": _RETRY["max_delay"],
    "RETRY_JITTER": _RETRY["jitter"],
    # Handlers running at once per topic in ``pillarbox_worker``.
    "CONCURRENCY": _WORKER["concurrency"],
    # A handler running longer than this (seconds) fails (None: no limit).
    "HANDLER_TIMEOUT": _WORKER["handler_timeout"],
    # How long running handlers get to finish on SIGTERM (seconds).
    "SHUTDOWN_GRACE": _WORKER["shutdown_grace"],
    # Where idempotency keys are remembered (None: the broker's own store).
    "IDEMPOTENCY_STORE": None,
    # How long they are remembered (seconds).
    "IDEMPOTENCY_RETENTION": _WORKER["idempotency_retention"],
    # Import ``tasks`` modules of installed apps when Django starts.
    "AUTODISCOVER": True,
    # More topics to show in the admin besides the project's own.
    "ADMIN_TOPICS": [],
    # Periodic tasks, by schedule name: {"task": "app.tasks.name", "cron":
    # "0 3 * * *" or "every": seconds, "zone", "args", "kwargs", "misfire"...}.
    # ``pillarbox_worker`` upserts them when it starts.
    "SCHEDULES": {},
}

_SECONDS = ("RETRY_DELAY", "RETRY_MAX_DELAY", "HANDLER_TIMEOUT", "SHUTDOWN_GRACE", "IDEMPOTENCY_RETENTION")


def default_url() -> str:
    """An embedded database beside the project: nothing to install or run."""
    base = getattr(settings, "BASE_DIR", None)
    folder = Path(base) if base is not None else Path.cwd()
    return f"sqlite://{folder / 'pillarbox.sqlite3'}"


def url() -> str:
    """The broker URL: ``PILLARBOX_URL``, else :func:`default_url`."""
    value = getattr(settings, "PILLARBOX_URL", None)
    return default_url() if value in (None, "") else str(value)


def raw() -> Dict[str, Any]:
    """The ``PILLARBOX`` setting as written (an empty dict when unset)."""
    value = getattr(settings, "PILLARBOX", None)
    return dict(value) if isinstance(value, dict) else {}


def option(name: str) -> Any:
    """One option: the project's value, else the default."""
    return raw().get(name, DEFAULTS[name])


def retry_policy(max_retries: Optional[int] = None) -> RetryPolicy:
    """The project's default retry policy (``max_retries`` overriding its budget)."""
    return RetryPolicy(
        max_retries=option("MAX_RETRIES") if max_retries is None else max_retries,
        initial_delay=option("RETRY_DELAY"),
        multiplier=option("RETRY_MULTIPLIER"),
        max_delay=option("RETRY_MAX_DELAY"),
        jitter=option("RETRY_JITTER"),
    )


def worker_options() -> Dict[str, Any]:
    """Keyword arguments for :class:`pillarbox.Worker` from the settings."""
    return {
        "concurrency": option("CONCURRENCY"),
        "handler_timeout": option("HANDLER_TIMEOUT"),
        "shutdown_grace": option("SHUTDOWN_GRACE"),
        "idempotency_store": option("IDEMPOTENCY_STORE"),
        "idempotency_retention": option("IDEMPOTENCY_RETENTION"),
    }


def problems() -> Dict[str, str]:
    """What is wrong with the ``PILLARBOX`` setting: key -> explanation."""
    value = getattr(settings, "PILLARBOX", None)
    if value is None:
        return {}
    if not isinstance(value, dict):
        return {"PILLARBOX": f"must be a dict, not {type(value).__name__}"}
    found: Dict[str, str] = {}
    for key, v in value.items():
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key).upper(), list(DEFAULTS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            found[str(key)] = f"unknown option{hint}; known: {', '.join(sorted(DEFAULTS))}"
        elif key == "MAX_RETRIES":
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 2**32 - 1:
                found[key] = f"must be a whole number from 0 to {2**32 - 1}, not {v!r}"
        elif key == "CONCURRENCY":
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= _native.MAX_CONCURRENCY:
                found[key] = f"must be a whole number from 1 to {_native.MAX_CONCURRENCY}, not {v!r}"
        elif key in _SECONDS:
            nullable = key in ("HANDLER_TIMEOUT", "IDEMPOTENCY_RETENTION")
            if v is None and nullable:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                found[key] = f"must be a number of seconds >= 0{' or None' if nullable else ''}, not {v!r}"
        elif key in ("RETRY_MULTIPLIER", "RETRY_JITTER"):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                found[key] = f"must be a number >= 0, not {v!r}"
        elif key in ("TOPIC", "GROUP"):
            if not isinstance(v, str) or not v:
                found[key] = f"must be a non-empty string, not {v!r}"
        elif key == "IDEMPOTENCY_STORE":
            if v is not None and not isinstance(v, str):
                found[key] = f"must be a URL string or None, not {v!r}"
        elif key == "AUTODISCOVER":
            if not isinstance(v, bool):
                found[key] = f"must be True or False, not {v!r}"
        elif key == "SCHEDULES":
            found.update(schedule_problems(v))
        elif key == "ADMIN_TOPICS":
            if not isinstance(v, (list, tuple)) or not all(isinstance(t, str) and t for t in v):
                found[key] = f"must be a list of topic names, not {v!r}"
    return found


#: What a schedule of ``PILLARBOX["SCHEDULES"]`` may say.
SCHEDULE_KEYS = ("task", "cron", "every", "zone", "start", "end", "misfire", "misfire_cap", "args", "kwargs")


def schedule_problems(value: Any) -> Dict[str, str]:
    """What is wrong with ``PILLARBOX["SCHEDULES"]``, per schedule. Each is
    tried on a throwaway in-memory broker, so the core checks it exactly as
    the worker will (a cron expression, a zone, an interval...)."""
    from .. import connect
    from ..errors import InvalidOption
    from ..tasks import envelope

    if not isinstance(value, dict):
        return {"SCHEDULES": f"must be a dict of schedule name -> schedule, not {type(value).__name__}"}
    found: Dict[str, str] = {}
    scratch = connect("memory://")
    for name, spec in value.items():
        where = f"SCHEDULES:{name}"
        if not isinstance(spec, dict):
            found[where] = f"must be a dict, not {type(spec).__name__}"
            continue
        unknown = sorted(set(spec) - set(SCHEDULE_KEYS))
        if unknown:
            found[where] = f"unknown key {unknown[0]!r}; known: {', '.join(SCHEDULE_KEYS)}"
            continue
        if not isinstance(spec.get("task"), str) or not spec["task"]:
            found[where] = "needs 'task': the task's name, e.g. 'imports.tasks.nightly'"
            continue
        options = {k: v for k, v in spec.items() if k not in ("task", "args", "kwargs")}
        try:
            payload = envelope(spec["task"], spec.get("args", ()), spec.get("kwargs") or {})
            scratch.upsert_schedule(str(name), "tasks", payload, **options)
        except (InvalidOption, TypeError, ValueError) as exc:
            found[where] = str(exc)
    scratch.close()
    return found


def pillarbox_backends() -> List[Any]:
    """The configured ``TASKS`` backends that are Pillarbox's (none where
    Django's Tasks framework is not installed)."""
    # The framework is optional (Django 6, or the backport on 5.2): imported
    # when asked for, so that the settings module never needs it.
    from . import _compat

    if not _compat.AVAILABLE:
        return []
    tasks = getattr(settings, "TASKS", None) or {}
    return [
        _compat.task_backends[alias]
        for alias, params in tasks.items()
        if isinstance(params, dict) and str(params.get("BACKEND", "")).endswith("PillarboxBackend")
    ]
