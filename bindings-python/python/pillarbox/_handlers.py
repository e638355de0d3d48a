"""How a Python handler's result becomes the core's verdict.

The worker runtime (in Rust) decides what happens next: retry with backoff,
dead letter, or ack. This module only says what the handler did: succeeded
(``None``), or failed with a kind, a message, whether a retry may help, and
an optional wait before it.
"""

from __future__ import annotations

import asyncio
import inspect
from datetime import timedelta
from typing import Any, Awaitable, Callable, Optional, Tuple, Type, Union

from ._durations import seconds

#: ``(kind, message, retryable, retry_after_seconds)``, or ``None`` for success.
Outcome = Optional[Tuple[str, str, bool, Optional[float]]]

ExceptionTypes = Union[Type[BaseException], Tuple[Type[BaseException], ...]]


class Retry(Exception):
    """Raise in a handler to retry the job (within the retry budget).

    ``after`` (seconds or a ``timedelta``) replaces the policy's backoff for
    this retry. Raised ``from`` another exception, the failure's kind is that
    exception's class name.
    """

    def __init__(self, reason: str = "", *, after: Union[float, timedelta, None] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = seconds(after, "after")


class Fatal(Exception):
    """Raise in a handler to dead-letter the job at once: no retry can fix it.

    ``kind`` names the failure in the dead letter's reason; by default the
    class name of the exception this was raised ``from``, else ``Fatal``.
    """

    def __init__(self, reason: str = "", *, kind: Optional[str] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class Classifier:
    """Which exceptions retry and which dead-letter at once.

    By default every exception is retried within the budget, except
    :class:`Fatal`. ``retry_for`` (Celery's ``autoretry_for``) limits retries
    to those classes, everything else being fatal; ``fatal_for`` (Celery's
    ``dont_autoretry_for``) makes those classes fatal.
    """

    def __init__(self, retry_for: Optional[ExceptionTypes] = None, fatal_for: ExceptionTypes = ()) -> None:
        self.retry_for = retry_for
        self.fatal_for = fatal_for

    def outcome(self, exc: BaseException) -> Outcome:
        cause = exc.__cause__
        if isinstance(exc, Retry):
            kind = type(cause).__name__ if cause is not None else "Retry"
            return (kind, exc.reason or str(cause or ""), True, exc.after)
        if isinstance(exc, Fatal):
            kind = exc.kind or (type(cause).__name__ if cause is not None else "Fatal")
            return (kind, exc.reason or str(cause or ""), False, None)
        retryable = not isinstance(exc, self.fatal_for) and (
            self.retry_for is None or isinstance(exc, self.retry_for)
        )
        return (type(exc).__name__, str(exc), retryable, None)


def is_async(handler: Callable[..., Any]) -> bool:
    """Whether calling ``handler`` gives a coroutine (``async def`` or an object with one as ``__call__``)."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def invoker(handler: Callable[..., Any], classifier: Classifier) -> Callable[..., Any]:
    """What the native worker calls with each job: the handler, with its
    exceptions turned into an :data:`Outcome`.

    For a plain function, ``invoke(job)`` returns the outcome. For an async
    handler, ``invoke(job, done)`` is a coroutine that hands the outcome to
    ``done`` itself (sooner than a task's done-callback would), and lets a
    cancellation propagate after reporting it.
    """
    if is_async(handler):
        async_handler: Callable[[Any], Awaitable[Any]] = handler

        async def invoke_async(job: Any, done: Callable[[Outcome], None]) -> None:
            try:
                await async_handler(job)
            except asyncio.CancelledError:
                done(("CancelledError", "the handler was cancelled", True, None))
                raise
            except Exception as exc:
                done(classifier.outcome(exc))
                return
            except BaseException as exc:
                done((type(exc).__name__, str(exc), True, None))
                raise
            done(None)

        return invoke_async

    def invoke(job: Any) -> Outcome:
        try:
            handler(job)
        except Exception as exc:
            return classifier.outcome(exc)
        return None

    return invoke
