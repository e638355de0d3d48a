"""The project's :class:`pillarbox.App`: the tasks of every installed app,
configured by the settings, plus publishing after a transaction commits.

::

    # myapp/tasks.py (found by autodiscovery)
    import pillarbox.django

    @pillarbox.django.task(max_retries=5)
    def send_welcome(user_id: int) -> None: ...

    # a view
    with transaction.atomic():
        user = User.objects.create(...)
        send_welcome.delay_on_commit(user.id)   # published only if this commits
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

from django.db import transaction

from .._broker import Payload
from .._worker import Worker
from ..tasks import App, Task
from . import conf, runner


class DjangoTask(Task):
    """A task of the project's app: ``delay`` and ``apply_async`` as in
    :class:`pillarbox.Task`, plus their on-commit forms."""

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        """``delay`` once the current transaction commits (at once outside
        one); nothing is published if it rolls back."""
        transaction.on_commit(lambda: self.delay(*args, **kwargs))

    def apply_async_on_commit(
        self,
        args: Sequence[Any] = (),
        kwargs: Optional[Dict[str, Any]] = None,
        *,
        using: Optional[str] = None,
        **options: Any,
    ) -> None:
        """``apply_async`` once the transaction of database ``using`` commits."""
        transaction.on_commit(lambda: self.apply_async(args, kwargs, **options), using=using)


class DjangoApp(App):
    """The project's app: worker defaults come from the ``PILLARBOX`` setting,
    and its topics include those of the Django Tasks backends."""

    def __init__(self, url: str, *, group: str, default_topic: str) -> None:
        super().__init__(url, group=group, default_topic=default_topic)
        self.task_class = DjangoTask

    def django_topics(self) -> List[str]:
        """The topics of the Django Tasks backends that publish through Pillarbox."""
        return sorted({topic for backend in conf.pillarbox_backends() for topic in backend.topics()})

    def topics(self) -> List[str]:
        return sorted(set(super().topics()) | set(self.django_topics()))

    def handler(self, topic: str) -> Callable[[Any], None]:
        return runner.handler(self, topic)

    def call(self, name: str, job: Any, args: List[Any], kwargs: Dict[str, Any]) -> None:
        """A task of the app, else a Django Task of an installed app (its
        result stored and its signals sent), else ``UnknownTask``."""
        if name not in self.tasks:
            django_task = runner.find_django_task(name)
            if django_task is not None:
                runner.run_django_task(django_task, job, args, kwargs)
                return
        super().call(name, job, args, kwargs)

    def sync_schedules(self) -> Dict[str, str]:
        """Upserts the schedules of ``PILLARBOX["SCHEDULES"]``; returns what
        each upsert did (``created``, ``updated``, ``unchanged``). Schedules
        removed from the setting stay until removed (``pillarbox schedules
        remove NAME``), as a redeploy of an older release must not drop them."""
        done: Dict[str, str] = {}
        for name, spec in (conf.option("SCHEDULES") or {}).items():
            options = {k: v for k, v in spec.items() if k != "task"}
            done[name] = self.schedule(name, spec["task"], **options)
        return done

    def workers(self, topics: Optional[Iterable[str]] = None, **options: Any) -> List[Worker]:
        """One worker per topic, with the settings' retry policy unless a task
        of the topic set its own, and the settings' worker options."""
        chosen = list(topics) if topics is not None else self.topics()
        if not chosen:
            raise ValueError(
                "no tasks are registered and no Django Tasks backend uses Pillarbox, so there is nothing to run"
            )
        settings_options = {k: v for k, v in conf.worker_options().items() if v is not None}
        made = []
        for topic in chosen:
            self.ensure_topic(topic)
            merged = {**settings_options, **options}
            merged.setdefault("retry", self._retry.get(topic) or conf.retry_policy())
            made.append(Worker(self.broker, topic, self.group, self.handler(topic), **merged))
        return made


_app: Optional[DjangoApp] = None
_app_lock = threading.Lock()


def get_app() -> DjangoApp:
    """The project's app, made from the settings on first use."""
    global _app
    with _app_lock:
        if _app is None:
            _app = DjangoApp(conf.url(), group=conf.option("GROUP"), default_topic=conf.option("TOPIC"))
        return _app


def task(fn: Optional[Callable[..., Any]] = None, **options: Any) -> Any:
    """Registers a task on the project's app: ``@pillarbox.django.task`` or
    ``@pillarbox.django.task(max_retries=5, topic=..., idempotency_key=...)``,
    with the options of :meth:`pillarbox.App.task`."""
    app = get_app()

    def register(f: Callable[..., Any]) -> DjangoTask:
        made: DjangoTask = app.task(f, **options)
        return made

    return register(fn) if fn is not None else register


def publish_on_commit(
    topic: str,
    payload: Payload,
    *,
    using: Optional[str] = None,
    key: Optional[str] = None,
    idempotency_key: Optional[str] = None,
    headers: Optional[Dict[str, str]] = None,
    content_type: Optional[str] = None,
    delay: Union[float, timedelta, None] = None,
    deliver_at: Optional[datetime] = None,
    traceparent: Optional[str] = None,
    tracestate: Optional[str] = None,
) -> None:
    """Publishes a message to ``topic`` through the project's broker once the
    transaction of database ``using`` commits (at once outside a
    transaction); nothing is published if it rolls back."""

    def publish() -> None:
        get_app().broker.publish(
            topic,
            payload,
            key=key,
            idempotency_key=idempotency_key,
            headers=headers,
            content_type=content_type,
            delay=delay,
            deliver_at=deliver_at,
            traceparent=traceparent,
            tracestate=tracestate,
        )

    transaction.on_commit(publish, using=using)
