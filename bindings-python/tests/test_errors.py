"""One exception class per core error code; the codes never change."""

from __future__ import annotations

import pillarbox
from pillarbox import errors


def test_every_code_has_its_class_and_the_codes_are_pinned() -> None:
    assert {code: cls.__name__ for code, cls in errors.BY_CODE.items()} == {
        "INVALID_URL": "InvalidUrl",
        "UNKNOWN_SCHEME": "UnknownScheme",
        "BACKEND_NOT_ENABLED": "BackendNotEnabled",
        "INVALID_OPTION": "InvalidOption",
        "UNSUPPORTED": "Unsupported",
        "MESSAGE_TOO_LARGE": "MessageTooLarge",
        "QUEUE_FULL": "QueueFull",
        "INVALID_MESSAGE": "InvalidMessage",
        "CONNECT": "ConnectError",
        "BACKEND": "BackendError",
        "TIMEOUT": "Timeout",
        "LEASE_LOST": "LeaseLost",
        "CLOSED": "Closed",
        "ALREADY_RUNNING": "AlreadyRunning",
    }
    assert all(issubclass(cls, pillarbox.Error) for cls in errors.BY_CODE.values())


def test_an_invalid_option_is_an_invalid_option() -> None:
    try:
        pillarbox.connect("memory://?poll_ms=never")
    except pillarbox.InvalidOption as e:
        assert e.code == "INVALID_OPTION" and "poll_ms" in str(e)
    else:
        raise AssertionError("accepted an invalid option")


def test_worker_options_are_checked() -> None:
    broker = pillarbox.connect("memory://")
    try:
        pillarbox.Worker(broker, "t", "g", lambda job: None, concurrency=0)
    except pillarbox.InvalidOption as e:
        assert "concurrency" in str(e)
    else:
        raise AssertionError("accepted concurrency 0")
