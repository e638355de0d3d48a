"""Each call's arguments written once, and the two ways to wait on it.

A broker call is defined once, here, as a function that checks its
arguments and returns the native :class:`_native.Operation` (which runs on
Pillarbox's threads). :func:`blocking` makes it a method of
:class:`pillarbox.Broker` that waits with the GIL released;
:func:`awaiting` a coroutine method of :class:`pillarbox.aio.Broker` that
resolves an asyncio future. Both keep the definition's signature and
docstring, so the two facades cannot drift (``tests/test_parity.py``
compares them).

:func:`checked` turns a misspelt keyword into ``InvalidOption`` naming the
closest option, as the Node package does, at no cost to a good call.
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import inspect
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Iterable, List, Optional, Protocol, Tuple, TypeVar, Union, cast

from . import _native
from ._native import Broker as NativeBroker
from ._native import DeadLetter, GroupStats, Message, Operation, ScheduleInfo
from .errors import InvalidOption, invalid_option

if TYPE_CHECKING:
    from typing import ParamSpec

    P = ParamSpec("P")

T = TypeVar("T")
U = TypeVar("U")
F = TypeVar("F", bound=Callable[..., Any])

Payload = Union[bytes, bytearray, memoryview, str]


def checked(fn: F) -> F:
    """``fn``, whose unknown keyword arguments are ``InvalidOption`` with the
    closest known name instead of Python's ``TypeError``."""
    parameters = inspect.signature(fn).parameters
    # The options: the keyword-only parameters where there are some.
    kinds: Tuple[inspect._ParameterKind, ...] = (inspect.Parameter.KEYWORD_ONLY,)
    if not any(p.kind in kinds for p in parameters.values()):
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    known = [n for n, p in parameters.items() if n != "self" and p.kind in kinds]
    call_name = fn.__qualname__.replace(".__init__", "").replace("BrokerCalls.", "Broker.")

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TypeError:
            # Binding fails before the body runs: an unknown name here is why.
            unknown = [k for k in kwargs if k not in parameters]
            if unknown:
                raise unknown_option(unknown[0], call_name, known) from None
            raise

    return cast(F, call)


def unknown_option(name: str, call: str, known: List[str]) -> InvalidOption:
    near = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean `{near[0]}`?)" if near else ""
    return invalid_option(name, f"not an option of {call}{hint}; its options are {', '.join(known)}")


def blocking(define: "Callable[P, Operation[T]]") -> "Callable[P, T]":
    """The call ``define`` defines, waited for with the GIL released."""

    @functools.wraps(define)
    def call(*args: Any, **kwargs: Any) -> Any:
        return define(*args, **kwargs).wait()

    call.__signature__ = _returning(define)  # type: ignore[attr-defined]
    return checked(call)


def awaiting(define: "Callable[P, Operation[T]]") -> "Callable[P, Awaitable[T]]":
    """The call ``define`` defines, as a coroutine: the operation resolves
    this loop's future when done, so the loop never blocks. Its arguments
    are checked when it is called; it starts when awaited (an operation
    runs only once waited for)."""

    @functools.wraps(define)
    def call(*args: Any, **kwargs: Any) -> Any:
        return wait(define(*args, **kwargs))

    call.__signature__ = _returning(define)  # type: ignore[attr-defined]
    method = checked(call)
    mark = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
    return mark(method) if mark is not None else method


async def wait(operation: "Operation[Any]") -> Any:
    """Awaits a native operation on the running loop."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    operation.schedule(loop, future)
    return await future


def _returning(define: Callable[..., Any]) -> inspect.Signature:
    """``define``'s signature, returning what the operation resolves to."""
    signature = inspect.signature(define)
    returns = str(signature.return_annotation)
    if returns.startswith("Operation[") and returns.endswith("]"):
        returns = returns[len("Operation[") : -1]
    self, *rest = signature.parameters.values()
    return signature.replace(parameters=[self.replace(annotation=self.empty), *rest], return_annotation=returns)


# --- the broker's calls, each defined once -------------------------------------------


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


class HoldsNative(Protocol):
    """A facade: what holds the native broker."""

    _native: NativeBroker


class BrokerCalls:
    """The broker's calls, each returning its native operation. Their
    ``self`` is any facade that holds the native broker."""

    _native: NativeBroker

    def ensure_group(self: HoldsNative, topic: str, group: str) -> Operation[None]:
        """Creates ``group`` on ``topic`` if needed: a subscription that
        receives everything published from now on. Idempotent."""
        return self._native.ensure_group(topic, group)

    def publish(
        self: HoldsNative,
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
    ) -> Operation[str]:
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
        return self._native.publish_one(topic, m)

    def publish_many(self: HoldsNative, topic: str, batch: Iterable[Union[Payload, Message]]) -> Operation[List[str]]:
        """Publishes a batch in one go (pipelined, confirmed together); returns
        the ids. Nothing is published if any message is invalid or too large."""
        return self._native.publish(topic, messages(batch))

    def inspect(self: HoldsNative, topic: str, group: str) -> Operation[GroupStats]:
        """The group's figures, from the broker: ready, in flight, waiting,
        dead letters, oldest age and lag per partition."""
        return self._native.inspect(topic, group)

    def groups(self: HoldsNative, topic: str) -> Operation[List[str]]:
        """The groups of ``topic``."""
        return self._native.groups(topic)

    def dead_letters(
        self: HoldsNative, topic: str, group: str, *, limit: Optional[int] = None, after: Optional[str] = None
    ) -> Operation[List[DeadLetter]]:
        """The group's dead letters with their reason, oldest first, after the
        dead letter id ``after``; at most ``limit`` (default: the core's page, 100)."""
        return self._native.dead_letters(topic, group, after, limit)

    def redrive(
        self: HoldsNative,
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
    ) -> Operation[int]:
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
        )

    def purge(
        self: HoldsNative,
        topic: str,
        group: str,
        *,
        error_kind: Optional[str] = None,
        cause: Optional[str] = None,
        error_contains: Optional[str] = None,
        failed_before: Optional[datetime] = None,
        message_ids: Optional[List[str]] = None,
    ) -> Operation[int]:
        """Deletes matching dead letters (all of them without a filter); returns how many."""
        return self._native.purge(
            topic,
            group,
            error_kind=error_kind,
            cause=cause,
            error_contains=error_contains,
            failed_before=failed_before,
            message_ids=message_ids,
        )

    def upsert_schedule(
        self: HoldsNative,
        name: str,
        topic: str,
        payload: Payload,
        *,
        cron: Optional[str] = None,
        every: Union[float, timedelta, None] = None,
        zone: Optional[str] = None,
        start: Optional[datetime] = None,
        end: Optional[datetime] = None,
        misfire: Optional[str] = None,
        misfire_cap: Optional[int] = None,
        key: Optional[str] = None,
        headers: Optional[Dict[str, str]] = None,
        content_type: Optional[str] = None,
    ) -> Operation[str]:
        """Creates or replaces the schedule ``name``: at each tick of ``cron``
        (read in the IANA time ``zone``, UTC by default) or ``every`` (seconds
        or a ``timedelta``), ``payload`` is published to ``topic`` once,
        however many schedulers run. ``misfire`` says what happens to ticks
        no scheduler was running for: ``"once"`` (the default: one run for
        all of them), ``"skip"`` or ``"all"`` (up to ``misfire_cap``).
        Returns ``"created"``, ``"updated"`` or ``"unchanged"``: a redeploy
        upserting the same schedule changes nothing."""
        return self._native.upsert_schedule(
            name,
            topic,
            payload,
            cron=cron,
            every=every,
            zone=zone,
            start=start,
            end=end,
            misfire=misfire,
            misfire_cap=misfire_cap,
            key=key,
            headers=headers,
            content_type=content_type,
        )

    def schedules(self: HoldsNative) -> Operation[List[ScheduleInfo]]:
        """The schedules this broker keeps: each one's timetable, last and next run, and whether it is paused."""
        return self._native.schedules()

    def pause_schedule(self: HoldsNative, name: str) -> Operation[bool]:
        """Pauses the schedule ``name``; returns whether it exists."""
        return self._native.pause_schedule(name)

    def resume_schedule(self: HoldsNative, name: str) -> Operation[bool]:
        """Resumes it; ticks missed while it was paused are not published."""
        return self._native.resume_schedule(name)

    def run_schedule_now(self: HoldsNative, name: str) -> Operation[Optional[str]]:
        """Publishes the schedule's message now, outside its timetable (its
        next tick comes as planned); returns the message id, ``None`` if
        there is no such schedule."""
        return self._native.run_schedule_now(name)

    def remove_schedule(self: HoldsNative, name: str) -> Operation[bool]:
        """Removes it; returns whether it existed."""
        return self._native.remove_schedule(name)

    def close(self: HoldsNative) -> Operation[None]:
        """Closes the connection. Messages held by workers come back after their lease."""
        return self._native.close()
