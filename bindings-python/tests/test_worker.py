"""Workers with Python handlers: outcomes, cancellation, the GIL, logging."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import time
from pathlib import Path
from typing import List

import pytest

import pillarbox

from .conftest import BACKENDS, URLS
from .support import run_until

QUICK = pillarbox.RetryPolicy(max_retries=2, initial_delay=0.05, jitter=0)


def test_a_plain_handler_retries_after_the_delay_it_asks_for(sqlite_url: str, topic: str) -> None:
    with pillarbox.connect(sqlite_url) as broker:
        broker.ensure_group(topic, "g")
        broker.publish(topic, b"flaky")
        seen: List[float] = []

        def handler(job: pillarbox.Job) -> None:
            seen.append(time.monotonic())
            if job.attempt == 1:
                raise pillarbox.Retry("not yet", after=0.4)

        worker = pillarbox.Worker(broker, topic, "g", handler, retry=QUICK, poll_wait=0.05)
        run_until(worker, lambda: worker.stats.succeeded == 1)
        assert len(seen) == 2 and seen[1] - seen[0] >= 0.39
        assert (worker.stats.retried, worker.stats.succeeded) == (1, 1)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["def", "async-def"])
def test_exceptions_are_classified_as_the_worker_says(sqlite_url: str, topic: str, asynchronous: bool) -> None:
    with pillarbox.connect(sqlite_url) as broker:
        broker.ensure_group(topic, "g")
        broker.publish_many(topic, [b"ValueError", b"ConnectionError", b"KeyError"])
        errors = {"ValueError": ValueError, "ConnectionError": ConnectionError, "KeyError": KeyError}

        def fail(job: pillarbox.Job) -> None:
            raise errors[job.text()]("boom")

        async def fail_async(job: pillarbox.Job) -> None:
            await asyncio.sleep(0)
            fail(job)

        worker = pillarbox.Worker(
            broker,
            topic,
            "g",
            fail_async if asynchronous else fail,
            retry=QUICK,
            poll_wait=0.05,
            retry_for=(ConnectionError, KeyError),
            fatal_for=KeyError,
        )
        run_until(worker, lambda: worker.stats.dead_lettered == 3)
        reasons = {d.reason.error_kind: d.reason for d in broker.dead_letters(topic, "g")}
        assert reasons["ValueError"].cause == "not_retryable"  # not in retry_for
        assert reasons["KeyError"].cause == "not_retryable"  # in fatal_for
        assert (reasons["ConnectionError"].cause, reasons["ConnectionError"].attempts) == ("retries_exhausted", 3)
        assert reasons["ConnectionError"].error_message == "boom"


def test_an_async_handler_past_its_timeout_is_cancelled(sqlite_url: str, topic: str) -> None:
    with pillarbox.connect(sqlite_url) as broker:
        broker.ensure_group(topic, "g")
        broker.publish(topic, b"slow")
        cancelled = threading.Event()

        async def slow(job: pillarbox.Job) -> None:
            assert job.deadline is not None
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        worker = pillarbox.Worker(
            broker, topic, "g", slow, handler_timeout=0.3, retry=pillarbox.RetryPolicy(max_retries=0), poll_wait=0.05
        )
        run_until(worker, lambda: worker.stats.dead_lettered == 1)
        assert cancelled.wait(5), "the coroutine never saw CancelledError"
        assert broker.dead_letters(topic, "g")[0].reason.error_kind == "timeout"


def test_a_plain_handler_sees_its_deadline_and_its_cancellation(sqlite_url: str, topic: str) -> None:
    with pillarbox.connect(sqlite_url) as broker:
        broker.ensure_group(topic, "g")
        broker.publish(topic, b"slow")
        seen = {}

        def slow(job: pillarbox.Job) -> None:
            seen["deadline"] = job.deadline
            until = time.monotonic() + 20
            while not job.cancelled and time.monotonic() < until:
                time.sleep(0.01)
            seen["cancelled"] = job.cancelled

        started = time.time()
        worker = pillarbox.Worker(
            broker, topic, "g", slow, handler_timeout=0.3, retry=pillarbox.RetryPolicy(max_retries=0), poll_wait=0.05
        )
        run_until(worker, lambda: worker.stats.dead_lettered == 1 and "cancelled" in seen)
        assert seen["cancelled"] is True
        assert started + 0.3 <= seen["deadline"].timestamp() <= time.time()


def test_handlers_running_past_the_shutdown_grace_are_cancelled(sqlite_url: str, topic: str) -> None:
    with pillarbox.connect(sqlite_url) as broker:
        broker.ensure_group(topic, "g")
        broker.publish(topic, b"stuck")
        running, cancelled = threading.Event(), threading.Event()

        async def stuck(job: pillarbox.Job) -> None:
            running.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        worker = pillarbox.Worker(broker, topic, "g", stuck, shutdown_grace=0.2, poll_wait=0.05)
        thread = threading.Thread(target=worker.run)
        thread.start()
        assert running.wait(10)
        worker.shutdown()
        thread.join(10)
        assert not thread.is_alive()
        assert cancelled.wait(5), "the coroutine was never cancelled"
        assert worker.stats.released == 1


def test_run_async_runs_coroutines_on_the_callers_loop(sqlite_url: str, topic: str) -> None:
    async def main() -> None:
        broker = await pillarbox.aio.connect(sqlite_url)
        await broker.ensure_group(topic, "g")
        await broker.publish_many(topic, [b"1", b"2", b"3"])
        loops = []

        async def handler(job: pillarbox.Job) -> None:
            loops.append(asyncio.get_running_loop())
            await broker.publish(topic + ".out", job.payload)

        worker = pillarbox.Worker(broker, topic, "g", handler, concurrency=3, poll_wait=0.05)
        running = asyncio.ensure_future(worker.run_async())
        while worker.stats.succeeded < 3:
            await asyncio.sleep(0.02)
        worker.shutdown()
        await asyncio.wait_for(running, 10)
        assert loops == [asyncio.get_running_loop()] * 3
        await broker.close()

    asyncio.run(main())


@pytest.mark.parametrize("backend", [b for b in ("sqlite", "redis", "amqp", "kafka") if b in BACKENDS])
def test_a_handler_holding_the_gil_past_its_lease_keeps_its_message(backend: str, tmp_path: Path, topic: str) -> None:
    # PyDLL calls keep the GIL: this handler blocks every Python thread for
    # 2.5 s, four times its lease. Where the backend leases messages, the
    # lease is renewed from Rust meanwhile; on RabbitMQ and Kafka the
    # connection holds the message: either way the second worker never
    # receives it.
    hold_gil = ctypes.PyDLL(None).usleep
    url = URLS[backend](tmp_path)
    first, second = pillarbox.connect(url), pillarbox.connect(url)
    first.ensure_group(topic, "g")
    first.publish(topic, b"cpu-bound")

    def handler(job: pillarbox.Job) -> None:
        hold_gil(2_500_000)

    workers = [pillarbox.Worker(b, topic, "g", handler, lease=0.6, poll_wait=0.05) for b in (first, second)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while sum(w.stats.succeeded for w in workers) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Past the point where a lost lease would have shown as a second delivery.
    time.sleep(1.0)
    for w in workers:
        w.shutdown()
    for t in threads:
        t.join(10)
    assert sum(w.stats.succeeded for w in workers) == 1
    assert sum(w.stats.received for w in workers) == 1, [w.stats for w in workers]


def test_the_cores_events_reach_pythons_logging(sqlite_url: str, topic: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pillarbox")
    with pillarbox.connect(sqlite_url) as broker:
        broker.ensure_group(topic, "g")
        broker.publish(topic, b"doomed")

        def refuse(job: pillarbox.Job) -> None:
            raise pillarbox.Fatal("no")

        worker = pillarbox.Worker(broker, topic, "g", refuse, poll_wait=0.05)
        run_until(worker, lambda: worker.stats.dead_lettered == 1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any("dead-lettered" in r.getMessage() for r in caplog.records):
        time.sleep(0.05)
    logged = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert logged and logged[0].levelno == logging.WARNING and logged[0].name == "pillarbox"


@pytest.mark.parametrize("asynchronous", [False, True], ids=["def", "async-def"])
def test_handlers_that_wait_run_concurrency_at_once(sqlite_url: str, topic: str, asynchronous: bool) -> None:
    with pillarbox.connect(sqlite_url) as broker:
        broker.ensure_group(topic, "g")
        lock = threading.Lock()
        running, peak = [0], [0]

        def enter() -> None:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])

        def leave() -> None:
            with lock:
                running[0] -= 1

        def waits(job: pillarbox.Job) -> None:
            enter()
            time.sleep(0.3)
            leave()

        async def waits_async(job: pillarbox.Job) -> None:
            enter()
            await asyncio.sleep(0.3)
            leave()

        worker = pillarbox.Worker(
            broker, topic, "g", waits_async if asynchronous else waits, concurrency=4, prefetch=8, poll_wait=0.05
        )
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            # Two rounds: the second finds the threads idle rather than starting.
            for round in (1, 2):
                broker.publish_many(topic, [b"x"] * 8)
                deadline = time.monotonic() + 30
                while worker.stats.succeeded < 8 * round and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert worker.stats.succeeded == 8 * round, worker.stats
                assert peak[0] == 4, f"round {round}: at most {peak[0]} handlers ran at once"
                peak[0] = 0
        finally:
            worker.shutdown()
            thread.join(30)


def test_an_async_worker_leaves_nothing_on_the_loop_once_it_stopped(sqlite_url: str, topic: str) -> None:
    async def main() -> None:
        broker = await pillarbox.aio.connect(sqlite_url)
        await broker.ensure_group(topic, "g")

        async def handler(job: pillarbox.Job) -> None:
            pass

        loop = asyncio.get_running_loop()
        watched_before = len(loop._selector.get_map())  # type: ignore[attr-defined]
        worker = pillarbox.Worker(broker, topic, "g", handler, poll_wait=0.05)
        running = asyncio.ensure_future(worker.run_async())
        await asyncio.sleep(0.2)
        worker.shutdown()
        await asyncio.wait_for(running, 10)
        await asyncio.sleep(0)  # the reader is removed on the loop's next turn
        assert len(loop._selector.get_map()) == watched_before  # type: ignore[attr-defined]
        await broker.close()

    asyncio.run(main())
