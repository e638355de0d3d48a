"""Pillarbox for Django: settings, tasks, a worker command, publishing on
commit, a backend for Django's Tasks framework and operator pages in the
admin. See ``docs/django.md``.

::

    INSTALLED_APPS = [..., "pillarbox.django"]
    PILLARBOX_URL = "redis://localhost:6379"      # unset: sqlite beside the project
    TASKS = {"default": {"BACKEND": "pillarbox.django.PillarboxBackend"}}

Importing ``pillarbox`` never imports Django; importing this does.
"""

from __future__ import annotations

from typing import Any

from .project import DjangoApp, DjangoTask, get_app, publish_on_commit, task

__all__ = ["DjangoApp", "DjangoTask", "PillarboxBackend", "get_app", "publish_on_commit", "task"]


def __getattr__(name: str) -> Any:
    # The backend needs Django's Tasks framework (Django 6, or the backport):
    # imported on demand so the rest works without it.
    if name == "PillarboxBackend":
        from .backend import PillarboxBackend

        return PillarboxBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
