"""A task layer for people coming from Celery.

::

    app = pillarbox.App("redis://localhost")

    @app.task(max_retries=5, idempotency_key=lambda to: f"welcome-{to}")
    def send_welcome(to: str) -> None:
        ...

    send_welcome.delay("ada@example.com")

and run the tasks with ``pillarbox worker myproject.tasks:app``.

A task call travels as one JSON envelope (see ``docs/tasks.md``), which
the Node and Rust task layers read and write too, so a task published here
runs in a Node worker and the other way round. Arguments must be JSON:
nothing is ever pickled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Type, Union

from . import _native
from ._broker import Broker, connect
from ._calls import checked
from ._handlers import Fatal
from ._scheduler import Scheduler
from ._worker import RetryPolicy, Worker
from .errors import invalid_option

log = logging.getLogger("pillarbox")

#: The group that runs an app's tasks on each topic.
DEFAULT_GROUP: str = _native.DEFAULTS["app"]["group"]
#: Where tasks go unless they name a topic.
DEFAULT_TOPIC: str = _native.DEFAULTS["app"]["default_topic"]
#: The header that names the task (readable by plain broker tools).
TASK_HEADER = "task"


def envelope(name: str, args: Sequence[Any], kwargs: Dict[str, Any]) -> bytes:
    """The JSON a task call travels as."""
    try:
        return json.dumps({"task": name, "args": list(args), "kwargs": kwargs}, separators=(",", ":")).encode()
    except TypeError as exc:
        raise TypeError(f"arguments of task {name} must be JSON: {exc}") from None


def read_envelope(payload: bytes) -> Tuple[str, List[Any], Dict[str, Any]]:
    """The task name, args and kwargs of an envelope; ``ValueError`` if it is not one."""
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise ValueError(f"not a task envelope (invalid JSON: {exc})") from None
    if not isinstance(body, dict) or not isinstance(body.get("task"), str):
        raise ValueError("not a task envelope (no task name)")
    args, kwargs = body.get("args", []), body.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ValueError("not a task envelope (args must be a list, kwargs an object)")
    return body["task"], args, kwargs


class Task:
    """A registered task. Call it to run it here; ``delay`` or
    ``apply_async`` to have a worker run it."""

    def __init__(
        self,
        app: "App",
        fn: Callable[..., Any],
        name: str,
        topic: str,
        idempotency_key: Optional[Callable[..., Optional[str]]],
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.topic = topic
        self.idempotency_key = idempotency_key
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> str:
        """Publishes a call of this task; returns the message id."""
        return self.apply_async(args, kwargs)

    @checked
    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Optional[Dict[str, Any]] = None,
        *,
        countdown: Union[float, timedelta, None] = None,
        eta: Optional[datetime] = None,
        key: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> str:
        """Publishes a call of this task: run no sooner than ``countdown``
        (seconds or a ``timedelta``) or ``eta``, with ``key`` for ordering and
        ``idempotency_key`` (default: the task's own rule) so that it runs
        once however often it is published."""
        kwargs = dict(kwargs or {})
        if idempotency_key is None and self.idempotency_key is not None:
            idempotency_key = self.idempotency_key(*args, **kwargs)
        self.app.ensure_topic(self.topic)
        return self.app.broker.publish(
            self.topic,
            envelope(self.name, args, kwargs),
            key=key,
            idempotency_key=idempotency_key,
            headers={**(headers or {}), TASK_HEADER: self.name},
            content_type="application/json",
            delay=countdown,
            deliver_at=eta,
        )

    def __repr__(self) -> str:
        return f"<pillarbox.Task {self.name} on {self.topic}>"


class App:
    """Tasks, the broker they go through, and the workers that run them.

    ``url`` is the broker (``PILLARBOX_URL`` style); the connection opens on
    first use. Retries are set per topic: the tasks of one topic share its
    worker's retry policy (give a task its own topic for another policy).
    """

    @checked
    def __init__(
        self,
        url: str,
        *,
        group: str = DEFAULT_GROUP,
        default_topic: str = DEFAULT_TOPIC,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        self.url = url
        self.group = _name(group, "group")
        self.default_topic = _name(default_topic, "default_topic")
        self.tasks: Dict[str, Task] = {}
        #: The class of the tasks ``task`` registers (integrations extend it).
        self.task_class: Type[Task] = Task
        self._retry: Dict[str, RetryPolicy] = {}
        self._broker: Optional[Broker] = None
        self._ensured: Set[str] = set()
        self._lock = threading.Lock()

    @property
    def broker(self) -> Broker:
        """The app's connection, opened on first use."""
        with self._lock:
            if self._broker is None:
                self._broker = connect(self.url)
                for topic in sorted({t.topic for t in self.tasks.values()}):
                    self._broker.ensure_group(topic, self.group)
                    self._ensured.add(topic)
            return self._broker

    def ensure_topic(self, topic: str) -> None:
        """Creates the group that runs ``topic``'s tasks, once per process,
        before the first publish to it: a group only receives what is
        published after it exists (RabbitMQ routes a message to no queue
        while its topic has no group)."""
        if topic in self._ensured:
            return
        broker = self.broker
        with self._lock:
            if topic not in self._ensured:
                broker.ensure_group(topic, self.group)
                self._ensured.add(topic)

    @checked
    def task(
        self,
        fn: Optional[Callable[..., Any]] = None,
        *,
        name: Optional[str] = None,
        topic: Optional[str] = None,
        max_retries: Optional[int] = None,
        retry: Optional[RetryPolicy] = None,
        idempotency_key: Optional[Callable[..., Optional[str]]] = None,
    ) -> Any:
        """Registers a task: ``@app.task`` or ``@app.task(max_retries=5, ...)``.

        ``name`` defaults to ``module.function``; ``max_retries`` or a full
        ``retry`` policy apply to the task's topic; ``idempotency_key`` is
        called with the task's arguments to give the key each call carries.
        """

        _name(name, "name", optional=True)
        _name(topic, "topic", optional=True)

        def register(f: Callable[..., Any]) -> Task:
            if not callable(f):
                raise TypeError(f"a task must be a function, not {type(f).__name__}")
            task_name = name or f"{f.__module__}.{f.__qualname__}"
            if task_name in self.tasks:
                raise ValueError(f"a task named {task_name} is already registered")
            task_topic = topic or self.default_topic
            policy = retry or (RetryPolicy(max_retries=max_retries) if max_retries is not None else None)
            if policy is not None:
                known = self._retry.get(task_topic)
                if known is not None and known != policy:
                    raise ValueError(
                        f"task {task_name}: topic {task_topic} already has retry policy {known}; "
                        "tasks of one topic share one policy (give this task a topic of its own)"
                    )
                self._retry[task_topic] = policy
            t = self.task_class(self, f, task_name, task_topic, idempotency_key)
            self.tasks[task_name] = t
            return t

        return register(fn) if fn is not None else register

    @checked
    def signature(self, name: str, *, topic: Optional[str] = None) -> Task:
        """A task registered elsewhere (another service, another language),
        to call by name with ``delay`` or ``apply_async``; it goes to
        ``topic`` (default: the app's default topic). Not registered here,
        so this app's workers do not run it."""

        if not isinstance(name, str):
            raise TypeError(f"a task name must be a str, not {type(name).__name__}")
        _name(topic, "topic", optional=True)

        def elsewhere(*args: Any, **kwargs: Any) -> Any:
            raise TypeError(f"task {name} runs in another worker: call it with delay() or apply_async()")

        return self.task_class(self, elsewhere, name, topic or self.default_topic, None)

    @checked
    def schedule(
        self,
        name: str,
        task: Union[Task, str],
        *,
        cron: Optional[str] = None,
        every: Union[float, timedelta, None] = None,
        zone: Optional[str] = None,
        start: Optional[datetime] = None,
        end: Optional[datetime] = None,
        misfire: Optional[str] = None,
        misfire_cap: Optional[int] = None,
        args: Sequence[Any] = (),
        kwargs: Optional[Dict[str, Any]] = None,
    ) -> str:
        """Runs ``task`` (a task, or the name of one registered anywhere) with
        ``args`` and ``kwargs`` at each tick of ``cron`` or ``every``: the
        schedule ``name``, kept by the broker (see
        :meth:`pillarbox.Broker.upsert_schedule`; ``run_worker`` runs a
        scheduler). Returns ``"created"``, ``"updated"`` or ``"unchanged"``."""
        # A name this app registered goes to its task's topic.
        target = task if isinstance(task, Task) else self.tasks.get(task) or self.signature(task)
        self.ensure_topic(target.topic)
        return self.broker.upsert_schedule(
            name,
            target.topic,
            envelope(target.name, args, dict(kwargs or {})),
            cron=cron,
            every=every,
            zone=zone,
            start=start,
            end=end,
            misfire=misfire,
            misfire_cap=misfire_cap,
            headers={TASK_HEADER: target.name},
            content_type="application/json",
        )

    def topics(self) -> List[str]:
        """The topics the registered tasks go to."""
        return sorted({t.topic for t in self.tasks.values()})

    def handler(self, topic: str) -> Callable[[Any], None]:
        """The handler that runs this app's tasks from ``topic``'s messages."""
        return self.run

    def run(self, job: Any) -> None:
        """Runs the task call ``job`` carries: the one envelope dispatch of
        every worker of the app (a payload that is not an envelope
        dead-letters as ``InvalidEnvelope``)."""
        try:
            name, args, kwargs = read_envelope(job.payload)
        except ValueError as exc:
            raise Fatal(str(exc), kind="InvalidEnvelope") from None
        self.call(name, job, args, kwargs)

    def call(self, name: str, job: Any, args: List[Any], kwargs: Dict[str, Any]) -> None:
        """Runs task ``name`` with ``args`` and ``kwargs``; a name this app
        does not have dead-letters as ``UnknownTask``. Integrations extend
        what a name can be (the Django app: Django Tasks)."""
        task = self.tasks.get(name)
        if task is None:
            raise Fatal(f"no task named {name} is registered in this worker", kind="UnknownTask")
        result = task.fn(*args, **kwargs)
        if asyncio.iscoroutine(result):
            asyncio.run(result)

    def workers(self, topics: Optional[Iterable[str]] = None, **options: Any) -> List[Worker]:
        """One worker per topic (all of the app's by default), with ``options``
        as :class:`pillarbox.Worker` takes them."""
        chosen = list(topics) if topics is not None else self.topics()
        if not chosen:
            raise ValueError("no tasks are registered, so there is nothing to run")
        return [
            Worker(
                self.broker,
                topic,
                self.group,
                self.handler(topic),
                **{"retry": self._retry.get(topic), **options},
            )
            for topic in chosen
        ]

    def run_worker(self, topics: Optional[Iterable[str]] = None, *, scheduler: bool = True, **options: Any) -> None:
        """Runs the app's tasks until SIGTERM or Ctrl-C, then shuts down
        gracefully: what the ``pillarbox worker`` command does. With
        ``scheduler`` (the default) it also publishes the ticks of the
        broker's schedules: every worker may, each tick is published once."""
        runners = self.runners(topics, scheduler=scheduler, **options)
        run_until_stopped(runners, f"running {len(self.tasks)} task(s) on {', '.join(self.topics())}")

    def runners(self, topics: Optional[Iterable[str]] = None, *, scheduler: bool = True, **options: Any) -> List[Any]:
        """The app's workers (see :meth:`workers`) and, with ``scheduler``,
        a :class:`pillarbox.Scheduler` of the broker's schedules: what
        :meth:`run_worker` runs."""
        runners: List[Any] = list(self.workers(topics, **options))
        if scheduler:
            runners.append(Scheduler(self.broker))
        return runners

    def __repr__(self) -> str:
        return f"<pillarbox.App {len(self.tasks)} task(s)>"


def _name(value: Any, option: str, optional: bool = False) -> Any:
    """``value`` if it is a ``str`` (or ``None`` when ``optional``);
    ``InvalidOption`` naming ``option`` otherwise, as the native layer words it."""
    if value is None and optional:
        return value
    if not isinstance(value, str):
        raise invalid_option(option, f"must be a str, not {type(value).__name__} {value!r:.40}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise invalid_option(option, "must be a str with no lone surrogates") from None
    return value


def run_until_stopped(workers: Sequence[Any], started: str = "") -> None:
    """Runs ``workers``, a thread each, until SIGTERM or Ctrl-C (or until they
    all stop), then shuts them down gracefully: no new messages, running
    handlers get their grace. A second Ctrl-C stops at once. Signals are
    watched only from the main thread; ``started`` is logged once running."""
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        log.info("%s received: shutting down gracefully", signal.Signals(signum).name)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
    threads = [
        threading.Thread(target=w.run, name=f"pillarbox-{getattr(w, 'consumer_name', 'scheduler')}", daemon=True)
        for w in workers
    ]
    try:
        for t in threads:
            t.start()
        if started:
            log.info("%s", started)
        # Wakes up regularly so that signals are handled promptly.
        while not stop.wait(0.2) and any(t.is_alive() for t in threads):
            pass
    finally:
        for w in workers:
            w.shutdown()
        for t in threads:
            t.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
