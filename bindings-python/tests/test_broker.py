"""The broker API, blocking and asyncio, on every backend."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest

import pillarbox

from .support import run_until, wait_stats


def test_publish_inspect_and_read_back_every_field(url: str, topic: str) -> None:
    with pillarbox.connect(url) as broker:
        broker.ensure_group(topic, "g")
        assert broker.groups(topic) == ["g"]
        sent = pillarbox.Message(
            "café",
            key="k1",
            idempotency_key="idem-1",
            headers={"tenant": "acme"},
            content_type="text/plain",
            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            tracestate="vendor=1",
        )
        ids = broker.publish_many(topic, [sent, b"two"])
        assert ids[0] == sent.id and len(ids) == 2
        seen = []

        def handler(job: pillarbox.Job) -> None:
            seen.append(job)

        worker = pillarbox.Worker(broker, topic, "g", handler, poll_wait=0.1)
        run_until(worker, lambda: len(seen) == 2)
        first = next(j for j in seen if j.id == sent.id)
        m = first.message
        assert (first.payload, first.text(), m.key, m.idempotency_key) == ("café".encode(), "café", "k1", "idem-1")
        assert (m.headers, m.content_type, m.traceparent) == ({"tenant": "acme"}, "text/plain", sent.traceparent)
        assert (first.attempt, first.max_attempts, first.topic, first.group) == (1, 4, topic, "g")
        assert abs((m.published_at - datetime.now(timezone.utc)).total_seconds()) < 60
        stats = wait_stats(broker, topic, "g", lambda s: s.ready == 0 and s.in_flight == 0)
        assert (stats.topic, stats.group, stats.dead_letters) == (topic, "g", 0)


def test_a_deliver_at_is_kept_to_the_millisecond() -> None:
    start = 1_796_645_121_000  # milliseconds since the epoch
    for ms in range(start, start + 1000):
        at = datetime.fromtimestamp(ms / 1000, timezone.utc)
        assert pillarbox.Message(b"x", deliver_at=at).deliver_at == at


def test_a_delayed_message_waits(url: str, topic: str) -> None:
    with pillarbox.connect(url) as broker:
        if not broker.capabilities.delayed_delivery:
            pytest.skip("no delayed delivery")
        broker.ensure_group(topic, "g")
        broker.publish(topic, b"later", delay=timedelta(seconds=600))
        broker.publish(topic, b"now", delay=0)
        stats = wait_stats(broker, topic, "g", lambda s: s.waiting == 1 and s.ready == 1)
        assert (stats.waiting, stats.ready) == (1, 1)


def test_dead_letters_are_listed_with_their_reason_redriven_and_purged(url: str, topic: str) -> None:
    with pillarbox.connect(url) as broker:
        broker.ensure_group(topic, "g")
        broker.publish_many(topic, [b"a", b"b", b"junk"])

        def refuse(job: pillarbox.Job) -> None:
            if job.payload == b"junk":
                raise pillarbox.Fatal("not a message", kind="Junk")
            raise KeyError("no such customer")

        worker = pillarbox.Worker(broker, topic, "g", refuse, retry=pillarbox.RetryPolicy(max_retries=0), poll_wait=0.1)
        run_until(worker, lambda: worker.stats.dead_lettered == 3)
        dead = broker.dead_letters(topic, "g")
        assert sorted(d.message.payload for d in dead) == [b"a", b"b", b"junk"]
        junk = next(d for d in dead if d.message.payload == b"junk")
        assert (junk.reason.cause, junk.reason.error_kind, junk.reason.error_message) == (
            "not_retryable",
            "Junk",
            "not a message",
        )
        other = next(d for d in dead if d.message.payload == b"a")
        assert (other.reason.cause, other.reason.error_kind, other.reason.attempts) == (
            "retries_exhausted",
            "KeyError",
            1,
        )
        assert other.reason.first_failed_at <= other.reason.last_failed_at
        assert broker.purge(topic, "g", error_kind="Junk") == 1
        started = time.monotonic()
        assert broker.redrive(topic, "g", per_second=10) == 2
        assert time.monotonic() - started >= 0.09
        handled = []
        worker = pillarbox.Worker(broker, topic, "g", lambda job: handled.append(job.attempt), poll_wait=0.1)
        run_until(worker, lambda: len(handled) == 2)
        assert handled == [1, 1]
        assert broker.purge(topic, "g") == 0


def test_oversized_and_invalid_input_raise_clear_errors_and_publish_nothing(url: str, topic: str) -> None:
    with pillarbox.connect(url) as broker:
        broker.ensure_group(topic, "g")
        limit = broker.capabilities.max_message_bytes
        with pytest.raises(pillarbox.MessageTooLarge) as raised:
            broker.publish_many(topic, [b"small", b"x" * (limit + 1)])
        assert raised.value.code == "MESSAGE_TOO_LARGE"
        with pytest.raises(pillarbox.InvalidMessage):
            broker.publish(topic, b"x", headers={"pb-attempt": "9"})
        with pytest.raises(pillarbox.InvalidMessage):
            broker.publish("bad topic!", b"x")
        with pytest.raises(TypeError):
            broker.publish(topic, 42)  # type: ignore[arg-type]
        stats = wait_stats(broker, topic, "g", lambda s: s.ready == 0)
        assert (stats.ready, stats.waiting) == (0, 0)


def test_the_asyncio_api_has_the_same_methods(url: str, topic: str) -> None:
    async def main() -> None:
        async with await pillarbox.aio.connect(url) as broker:
            await broker.ensure_group(topic, "g")
            msg_id = await broker.publish(topic, b"hello", key="k")
            ids = await broker.publish_many(topic, [b"a", b"b"])
            assert len(ids) == 2 and msg_id not in ids
            assert await broker.groups(topic) == ["g"]
            # Figures can lag (RabbitMQ's management API): wait for them, on every backend.
            deadline = time.monotonic() + 20
            while (stats := await broker.inspect(topic, "g")).ready + (stats.in_flight or 0) != 3:
                assert time.monotonic() < deadline, f"the figures never showed the 3 messages: {stats}"
                await asyncio.sleep(0.1)
            assert await broker.dead_letters(topic, "g") == []
            assert await broker.purge(topic, "g") == 0

    asyncio.run(main())


def test_bad_urls_and_unreachable_brokers_raise_clear_errors() -> None:
    with pytest.raises(pillarbox.UnknownScheme) as raised:
        pillarbox.connect("bogus://x")
    assert raised.value.code == "UNKNOWN_SCHEME"
    with pytest.raises(pillarbox.InvalidUrl):
        pillarbox.connect("redis://user:secret@[bad")
    with pytest.raises(pillarbox.ConnectError) as unreachable:
        pillarbox.connect("redis://user:s3cret-pw@127.0.0.1:1?connect_timeout_ms=500")
    assert "s3cret-pw" not in str(unreachable.value)
    assert unreachable.value.transient
