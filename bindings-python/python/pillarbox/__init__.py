"""Pillarbox: one producer/consumer API over Redis, RabbitMQ, Kafka and an
embedded store, with retries, dead letters and idempotency keys that behave
the same on every backend and in every language.

::

    import pillarbox

    broker = pillarbox.connect("sqlite://queue.db")
    broker.ensure_group("emails", "sender")
    broker.publish("emails", b'{"to": "ada@example.com"}', idempotency_key="welcome-1")

    def send(job: pillarbox.Job) -> None:
        print(job.attempt, job.json())

    pillarbox.Worker(broker, "emails", "sender", send, concurrency=4).run()

The blocking API lives here; :mod:`pillarbox.aio` has the same broker as
coroutines; :class:`pillarbox.App` is a Celery-style task layer.
"""

from . import aio, errors
from ._broker import Broker, connect
from ._handlers import Fatal, Retry
from ._native import (
    Capabilities,
    DeadLetter,
    DeadLetterReason,
    Failures,
    GroupStats,
    Job,
    Message,
    PartitionLag,
    ScheduleInfo,
    WorkerStats,
    __version__,
)
from ._scheduler import Scheduler
from ._worker import RetryPolicy, Worker
from .errors import (
    AlreadyRunning,
    BackendError,
    BackendNotEnabled,
    Closed,
    ConnectError,
    Error,
    InvalidMessage,
    InvalidOption,
    InvalidUrl,
    LeaseLost,
    MessageTooLarge,
    QueueFull,
    Timeout,
    UnknownScheme,
    Unsupported,
)
from .tasks import App, Task

__all__ = [
    "AlreadyRunning",
    "App",
    "BackendError",
    "BackendNotEnabled",
    "Broker",
    "Capabilities",
    "Closed",
    "ConnectError",
    "DeadLetter",
    "DeadLetterReason",
    "Error",
    "Failures",
    "Fatal",
    "GroupStats",
    "InvalidMessage",
    "InvalidOption",
    "InvalidUrl",
    "Job",
    "LeaseLost",
    "Message",
    "MessageTooLarge",
    "PartitionLag",
    "QueueFull",
    "Retry",
    "RetryPolicy",
    "ScheduleInfo",
    "Scheduler",
    "Task",
    "Timeout",
    "UnknownScheme",
    "Unsupported",
    "Worker",
    "WorkerStats",
    "__version__",
    "aio",
    "connect",
    "errors",
]
