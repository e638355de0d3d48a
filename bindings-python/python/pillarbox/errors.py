"""Pillarbox's exceptions: one class per error code of the core.

Every exception the package raises is a :class:`Error`; its ``code`` is the
core's stable code (the same string JavaScript errors carry), and never
changes for a given class.
"""

from __future__ import annotations

from typing import Dict, Type


class Error(Exception):
    """Anything that went wrong in Pillarbox. ``code`` says what, stably."""

    code: str = "ERROR"

    @property
    def transient(self) -> bool:
        """Whether trying again later may succeed (a lost connection, a timeout)."""
        return self.code in _TRANSIENT


class InvalidUrl(Error):
    """The broker URL could not be parsed, or names something it cannot."""

    code = "INVALID_URL"


class UnknownScheme(InvalidUrl):
    """No backend answers to the URL's scheme."""

    code = "UNKNOWN_SCHEME"


class BackendNotEnabled(Error):
    """The backend exists but this build was compiled without it."""

    code = "BACKEND_NOT_ENABLED"


class InvalidOption(Error, ValueError):
    """An option (in the URL or in code) has a bad value."""

    code = "INVALID_OPTION"


class Unsupported(Error):
    """The backend cannot do what was asked (see the broker's capabilities)."""

    code = "UNSUPPORTED"


class MessageTooLarge(Error, ValueError):
    """A message is larger than the backend accepts. Nothing was published."""

    code = "MESSAGE_TOO_LARGE"


class QueueFull(Error):
    """The topic holds as many unconsumed messages as its bound allows. Nothing was published."""

    code = "QUEUE_FULL"


class InvalidMessage(Error, ValueError):
    """A message or a name is not acceptable (empty topic, reserved header...)."""

    code = "INVALID_MESSAGE"


class ConnectError(Error, ConnectionError):
    """The broker could not be reached, or the connection was lost."""

    code = "CONNECT"


class BackendError(Error):
    """The broker answered with an error."""

    code = "BACKEND"


class Timeout(Error, TimeoutError):
    """An operation did not finish in time."""

    code = "TIMEOUT"


class LeaseLost(Error):
    """A delivery's lease was lost; the message will be delivered again."""

    code = "LEASE_LOST"


class Closed(Error):
    """The broker or worker was closed."""

    code = "CLOSED"


class AlreadyRunning(Error):
    """``run()`` was called on a worker that is running already."""

    code = "ALREADY_RUNNING"


_TRANSIENT = {"CONNECT", "BACKEND", "TIMEOUT", "QUEUE_FULL"}

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

__all__ = ["Error", "BY_CODE"] + [cls.__name__ for cls in BY_CODE.values()]
