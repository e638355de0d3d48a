"""The blocking broker API: for scripts, Django views and worker threads.

Every call releases the GIL while it waits on the broker, and can be
interrupted with Ctrl-C. :mod:`pillarbox.aio` has the same methods as
coroutines.
"""

from __future__ import annotations

from . import _native
from ._calls import BrokerCalls, Payload, blocking, message, messages

__all__ = ["Broker", "Payload", "connect", "message", "messages"]


def connect(url: str) -> "Broker":
    """Connects to the broker ``url`` names (``memory://``, ``sqlite://PATH``,
    ``redis://``, ``amqp://``, ``kafka://``...).

    Raises :class:`pillarbox.errors.InvalidUrl` for a bad URL and
    :class:`pillarbox.errors.ConnectError` when the broker cannot be reached.
    """
    return Broker(_native.connect(url).wait())


class Broker:
    """A connection to a broker. Thread-safe; share one per process.

    Use it as a context manager, or call :meth:`close` when done. After
    ``os.fork()`` the child reconnects by itself on its first call.
    """

    def __init__(self, native: _native.Broker) -> None:
        self._native = native

    @property
    def backend(self) -> str:
        """``memory``, ``sqlite``, ``redis``, ``amqp`` or ``kafka``."""
        return self._native.backend

    @property
    def url(self) -> str:
        """The broker URL, with any password redacted."""
        return self._native.url

    @property
    def capabilities(self) -> _native.Capabilities:
        """What this backend can do (delayed delivery, ordering, limits...)."""
        return self._native.capabilities

    # Each call is defined once (pillarbox._calls) and waited for here.
    ensure_group = blocking(BrokerCalls.ensure_group)
    publish = blocking(BrokerCalls.publish)
    publish_many = blocking(BrokerCalls.publish_many)
    inspect = blocking(BrokerCalls.inspect)
    groups = blocking(BrokerCalls.groups)
    dead_letters = blocking(BrokerCalls.dead_letters)
    redrive = blocking(BrokerCalls.redrive)
    purge = blocking(BrokerCalls.purge)
    upsert_schedule = blocking(BrokerCalls.upsert_schedule)
    schedules = blocking(BrokerCalls.schedules)
    pause_schedule = blocking(BrokerCalls.pause_schedule)
    resume_schedule = blocking(BrokerCalls.resume_schedule)
    run_schedule_now = blocking(BrokerCalls.run_schedule_now)
    remove_schedule = blocking(BrokerCalls.remove_schedule)
    close = blocking(BrokerCalls.close)

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pillarbox.Broker {self.url}>"
