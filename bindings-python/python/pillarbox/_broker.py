"""The blocking broker API: for scripts, Django views and worker threads.

Every call releases the GIL while it waits on the broker, and can be
interrupted with Ctrl-C. :mod:`pillarbox.aio` has the same methods as
coroutines.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Dict, Iterable, List, Optional, Union

from . import _native
from ._native import DeadLetter, GroupStats, Message

Payload = Union[bytes, bytearray, memoryview, str]


def message(
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
) -> Message:
    """A :class:`Message` from a payload and keyword arguments (a message is taken as it is)."""
    if isinstance(payload, Message):
        return payload
    return Message(
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


def messages(items: Iterable[Union[Payload, Message]]) -> List[Union[Payload, Message]]:
    """A batch: each item a :class:`Message` or a bare payload (made a message natively)."""
    return items if isinstance(items, list) else list(items)


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
    def capabilities(self) -> Dict[str, Any]:
        """What this backend can do (delayed delivery, ordering, limits...)."""
        return self._native.capabilities

    def ensure_group(self, topic: str, group: str) -> None:
        """Creates ``group`` on ``topic`` if needed: a subscription that
        receives everything published from now on. Idempotent."""
        self._native.ensure_group(topic, group).wait()

    def publish(
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
        return self._native.publish(topic, [m]).wait()[0]

    def publish_many(self, topic: str, batch: Iterable[Union[Payload, Message]]) -> List[str]:
        """Publishes a batch in one go (pipelined, confirmed together); returns
        the ids. Nothing is published if any message is invalid or too large."""
        return self._native.publish(topic, messages(batch)).wait()

    def inspect(self, topic: str, group: str) -> GroupStats:
        """The group's figures, from the broker: ready, in flight, waiting,
        dead letters, oldest age and lag per partition."""
        return self._native.inspect(topic, group).wait()

    def groups(self, topic: str) -> List[str]:
        """The groups of ``topic``."""
        return self._native.groups(topic).wait()

    def dead_letters(
        self, topic: str, group: str, *, limit: int = _native.DEFAULTS["dead_letters"]["limit"], after: Optional[str] = None
    ) -> List[DeadLetter]:
        """The group's dead letters with their reason, oldest first, after the dead letter id ``after``."""
        return self._native.dead_letters(topic, group, after, limit).wait()

    def redrive(
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
        """Sends matching dead letters back to their group as fresh messages
        (attempt 1), at most ``per_second`` a second; returns how many."""
        return self._native.redrive(
            topic,
            group,
            error_kind=error_kind,
            cause=cause,
            error_contains=error_contains,
            failed_before=failed_before,
            message_ids=message_ids,
            per_second=per_second,
            limit=limit,
        ).wait()

    def purge(
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
        """Deletes matching dead letters (all of them without a filter); returns how many."""
        return self._native.purge(
            topic,
            group,
            error_kind=error_kind,
            cause=cause,
            error_contains=error_contains,
            failed_before=failed_before,
            message_ids=message_ids,
        ).wait()

    def close(self) -> None:
        """Closes the connection. Messages held by workers come back after their lease."""
        self._native.close().wait()

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pillarbox.Broker {self.url}>"
