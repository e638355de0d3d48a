"""The asyncio API: the same broker methods as :mod:`pillarbox`, as coroutines.

::

    broker = await pillarbox.aio.connect("redis://localhost")
    await broker.publish("emails", b"hello")

Workers are shared with the blocking API: ``await worker.run_async()``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Dict, Iterable, List, Optional, Union

from . import _native
from ._broker import Payload, message, messages
from ._native import DeadLetter, GroupStats, Message

__all__ = ["connect", "Broker"]


async def wait(operation: "_native.Operation[Any]") -> Any:
    """Awaits a native operation: it runs on Pillarbox's threads and resolves
    this loop's future when done, so the loop never blocks."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    operation.schedule(loop, future)
    return await future


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
    def capabilities(self) -> Dict[str, Any]:
        """What this backend can do."""
        return self._native.capabilities

    async def ensure_group(self, topic: str, group: str) -> None:
        """Creates ``group`` on ``topic`` if needed. Idempotent."""
        await wait(self._native.ensure_group(topic, group))

    async def publish(
        self,
        topic: str,
        payload: Union[Payload, Message],
        *,
        key: Optional[str] = None,
        idempotency_key: Optional[str] = None,
        headers: Optional[Dict[str, str]] = None,
        content_type: Optional[str] = None,
        delay: Union[float, timedelta, None] = None,
        deliver_at: Optional[datetime] = None,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
    ) -> str:
        """Publishes one message; returns its id once the broker holds it durably."""
        m = message(
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
        ids: List[str] = await wait(self._native.publish(topic, [m]))
        return ids[0]

    async def publish_many(self, topic: str, batch: Iterable[Union[Payload, Message]]) -> List[str]:
        """Publishes a batch in one go; returns the ids."""
        ids: List[str] = await wait(self._native.publish(topic, messages(batch)))
        return ids

    async def inspect(self, topic: str, group: str) -> GroupStats:
        """The group's figures, from the broker."""
        stats: GroupStats = await wait(self._native.inspect(topic, group))
        return stats

    async def groups(self, topic: str) -> List[str]:
        """The groups of ``topic``."""
        names: List[str] = await wait(self._native.groups(topic))
        return names

    async def dead_letters(
        self, topic: str, group: str, *, limit: int = _native.DEFAULTS["dead_letters"]["limit"], after: Optional[str] = None
    ) -> List[DeadLetter]:
        """The group's dead letters with their reason, oldest first."""
        found: List[DeadLetter] = await wait(self._native.dead_letters(topic, group, after, limit))
        return found

    async def redrive(
        self,
        topic: str,
        group: str,
        *,
        error_kind: Optional[str] = None,
        cause: Optional[str] = None,
        error_contains: Optional[str] = None,
        failed_before: Optional[datetime] = None,
        message_ids: Optional[List[str]] = None,
        per_second: Optional[float] = None,
        limit: Optional[int] = None,
    ) -> int:
        """Sends matching dead letters back to their group; returns how many."""
        moved: int = await wait(
            self._native.redrive(
                topic,
                group,
                error_kind=error_kind,
                cause=cause,
                error_contains=error_contains,
                failed_before=failed_before,
                message_ids=message_ids,
                per_second=per_second,
                limit=limit,
            )
        )
        return moved

    async def purge(
        self,
        topic: str,
        group: str,
        *,
        error_kind: Optional[str] = None,
        cause: Optional[str] = None,
        error_contains: Optional[str] = None,
        failed_before: Optional[datetime] = None,
        message_ids: Optional[List[str]] = None,
    ) -> int:
        """Deletes matching dead letters; returns how many."""
        deleted: int = await wait(
            self._native.purge(
                topic,
                group,
                error_kind=error_kind,
                cause=cause,
                error_contains=error_contains,
                failed_before=failed_before,
                message_ids=message_ids,
            )
        )
        return deleted

    async def close(self) -> None:
        """Closes the connection."""
        await wait(self._native.close())

    async def __aenter__(self) -> "Broker":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<pillarbox.aio.Broker {self.url}>"
