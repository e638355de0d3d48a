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
    # Every code the core can raise, from the core itself: a new one fails here.
    assert sorted(pillarbox._native.ERROR_CODES) == sorted(errors.BY_CODE)
    assert all(getattr(pillarbox, cls.__name__) is cls for cls in errors.BY_CODE.values())


def test_errors_carry_the_cores_fields_and_its_transient_flag() -> None:
    try:
        pillarbox.connect("memory://?poll_ms=never")
    except pillarbox.InvalidOption as e:
        assert e.option == "poll_ms" and "whole number" in e.reason and e.transient is False
    else:
        raise AssertionError("accepted an invalid option")
    broker = pillarbox.connect("memory://?max_message_bytes=1024")
    broker.ensure_group("t", "g")
    try:
        broker.publish("t", b"x" * 2000)
    except pillarbox.MessageTooLarge as e:
        assert e.limit == 1024 and e.size > 2000 and not e.transient
    else:
        raise AssertionError("published a message over the limit")
    try:
        pillarbox.connect("redis://127.0.0.1:1/?connect_timeout_ms=500").ensure_group("t", "g")
    except pillarbox.ConnectError as e:
        assert e.backend == "redis" and e.transient is True and "127.0.0.1:1" in e.url and e.reason
    else:
        raise AssertionError("reached a broker on port 1")
    # Python's own checks make the same exception, fields included.
    try:
        pillarbox.Worker(broker, "t", "g", lambda job: None, retry=pillarbox.RetryPolicy(initial_delay=-1))
    except pillarbox.InvalidOption as e:
        assert e.option == "initial_delay" and e.transient is False
    else:
        raise AssertionError("accepted a negative delay")


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


def test_a_header_value_that_is_not_a_str_is_an_invalid_message_naming_it() -> None:
    broker = pillarbox.connect("memory://")
    broker.ensure_group("t", "g")
    for headers in ({"n": 1}, {"n": None}, {"n": b"bytes"}, {1: "x"}, ["a"]):
        try:
            broker.publish("t", b"x", headers=headers)  # type: ignore[arg-type]
        except pillarbox.InvalidMessage as exc:
            assert exc.code == "INVALID_MESSAGE"
        else:
            raise AssertionError(f"headers {headers!r} were accepted")
    try:
        broker.publish("t", b"x", headers={"count": 3})  # type: ignore[dict-item]
    except pillarbox.InvalidMessage as exc:
        assert "header `count` must be a str, not int" in str(exc)
    assert broker.inspect("t", "g").ready == 0


def test_job_text_and_json_of_a_payload_that_is_not_utf8_or_not_json_raise_a_value_error() -> None:
    from .support import run_until

    broker = pillarbox.connect("memory://")
    broker.ensure_group("t", "g")
    broker.publish_many("t", [b"h\xffi", b'{"a": '])
    seen = []

    def handle(job: pillarbox.Job) -> None:
        for read in (job.text, job.json):
            try:
                read()
                seen.append((read.__name__, None))
            except ValueError as exc:
                seen.append((read.__name__, str(exc)))

    worker = pillarbox.Worker(broker, "t", "g", handle, poll_wait=0.05)
    run_until(worker, lambda: worker.stats.succeeded == 2)
    assert [(name, why is None) for name, why in seen] == [("text", False), ("json", False), ("text", True), ("json", False)]
    assert seen[0][1].startswith("the payload is not valid UTF-8: "), seen[0]
