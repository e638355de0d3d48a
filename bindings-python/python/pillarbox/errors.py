"""Pillarbox's exceptions: one class per error code of the core.

Every exception the package raises is a :class:`Error`; its ``code`` is the
core's stable code (the same string JavaScript errors carry), and never
changes for a given class. The core's fields of each error are attributes
(``InvalidOption.option``, ``MessageTooLarge.size``...), as in JavaScript.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Dict, Optional, Type


class Error(Exception):
    """Anything that went wrong in Pillarbox. ``code`` says what, stably."""

    code: str = "ERROR"
    #: Whether trying again later may succeed (a lost connection, a
    #: timeout), as the core decides it.
    transient: bool = False

    def __init__(self, message: str = "", *, transient: bool = False, **fields: Any) -> None:
        super().__init__(message)
        self.transient = transient
        for name, value in fields.items():
            setattr(self, name, value)


class InvalidUrl(Error):
    """The broker URL could not be parsed, or names something it cannot."""

    code = "INVALID_URL"
    #: The URL, its credentials redacted.
    url: str
    reason: str


class UnknownScheme(InvalidUrl):
    """No backend answers to the URL's scheme."""

    code = "UNKNOWN_SCHEME"
    scheme: str


class BackendNotEnabled(Error):
    """The backend exists but this build was compiled without it."""

    code = "BACKEND_NOT_ENABLED"
    scheme: str
    #: The cargo feature that provides the backend.
    feature: str


class InvalidOption(Error, ValueError):
    """An option (in the URL or in code) has a bad value."""

    code = "INVALID_OPTION"
    #: The option as the caller spelt it (``max_retries``, ``retry.jitter``).
    option: str
    #: What is allowed, and what was given.
    reason: str


class Unsupported(Error):
    """The backend cannot do what was asked (see the broker's capabilities)."""

    code = "UNSUPPORTED"
    backend: str
    capability: str


class MessageTooLarge(Error, ValueError):
    """A message is larger than the backend accepts. Nothing was published."""

    code = "MESSAGE_TOO_LARGE"
    #: The message's encoded size in bytes.
    size: int
    #: The backend's limit in bytes.
    limit: int


class QueueFull(Error):
    """The topic holds as many unconsumed messages as its bound allows. Nothing was published."""

    code = "QUEUE_FULL"
    topic: str
    #: The topic's bound, in messages.
    limit: int


class InvalidMessage(Error, ValueError):
    """A message or a name is not acceptable (empty topic, reserved header...)."""

    code = "INVALID_MESSAGE"
    reason: str


class ConnectError(Error, ConnectionError):
    """The broker could not be reached, or the connection was lost."""

    code = "CONNECT"
    backend: str
    #: The URL, its credentials redacted.
    url: str
    reason: str


class BackendError(Error):
    """The broker answered with an error."""

    code = "BACKEND"
    backend: str
    reason: str


class Timeout(Error, TimeoutError):
    """An operation did not finish in time."""

    code = "TIMEOUT"
    operation: str
    after: timedelta


class LeaseLost(Error):
    """A delivery's lease was lost; the message will be delivered again."""

    code = "LEASE_LOST"
    #: The message, when one is known (a batch's settle may only say how many).
    message_id: Optional[str]
    count: int


class Closed(Error):
    """The broker or worker was closed."""

    code = "CLOSED"


class AlreadyRunning(Error):
    """``run()`` was called on a worker that is running already."""

    code = "ALREADY_RUNNING"


#: Each code's class; the native module raises through this table.
BY_CODE: Dict[str, Type[Error]] = {
    cls.code: cls
    for cls in (
        InvalidUrl,
        UnknownScheme,
        BackendNotEnabled,
        InvalidOption,
        Unsupported,
        MessageTooLarge,
        QueueFull,
        InvalidMessage,
        ConnectError,
        BackendError,
        Timeout,
        LeaseLost,
        Closed,
        AlreadyRunning,
    )
}



def invalid_option(option: str, reason: str) -> InvalidOption:
    """An ``InvalidOption`` worded as the core words it, for checks made in Python."""
    return InvalidOption(f"invalid option `{option}`: {reason}", option=option, reason=reason)


__all__ = ["Error", "BY_CODE", "invalid_option"] + [cls.__name__ for cls in BY_CODE.values()]
