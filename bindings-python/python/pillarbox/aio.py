"""The asyncio API: the same broker methods as :mod:`pillarbox`, as coroutines.

::

    broker = await pillarbox.aio.connect("redis://localhost")
    await broker.publish("emails", b"hello")

Workers are shared with the blocking API: ``await worker.run_async()``.
"""

from __future__ import annotations

from . import _native
from ._calls import BrokerCalls, awaiting, wait

__all__ = ["connect", "Broker"]


async def connect(url: str) -> "Broker":
    """Connects to the broker ``url`` names; see :func:`pillarbox.connect`."""
    return Broker(await wait(_native.connect(url)))


class Broker:
    """A connection to a broker, with coroutine methods. See :class:`pillarbox.Broker`."""

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

    # Each call is defined once (pillarbox._calls) and awaited here.
    ensure_group = awaiting(BrokerCalls.ensure_group)
    publish = awaiting(BrokerCalls.publish)
    publish_many = awaiting(BrokerCalls.publish_many)
    inspect = awaiting(BrokerCalls.inspect)
    groups = awaiting(BrokerCalls.groups)
    dead_letters = awaiting(BrokerCalls.dead_letters)
    redrive = awaiting(BrokerCalls.redrive)
    purge = awaiting(BrokerCalls.purge)
    upsert_schedule = awaiting(BrokerCalls.upsert_schedule)
    schedules = awaiting(BrokerCalls.schedules)
    pause_schedule = awaiting(BrokerCalls.pause_schedule)
    resume_schedule = awaiting(BrokerCalls.resume_schedule)
    run_schedule_now = awaiting(BrokerCalls.run_schedule_now)
    remove_schedule = awaiting(BrokerCalls.remove_schedule)
    close = awaiting(BrokerCalls.close)

    async def __aenter__(self) -> "Broker":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<pillarbox.aio.Broker {self.url}>"
