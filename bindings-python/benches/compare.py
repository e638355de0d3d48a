"""Pillarbox-Python beside the Rust core, redis-py, Celery 5 and pika, on the
same servers in one run: publish (one at a time, batches of 100) and consume
with a no-op handler, 100-byte messages. Prints each rate and the ratios the
goals are about.

    bash bindings-python/benches/run.sh      # installs what it needs, then runs this

Servers: Redis at PILLARBOX_REDIS_URL (default redis://127.0.0.1:6390) and
RabbitMQ at PILLARBOX_AMQP_URL (the test command's, tests/run.sh).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import pika
import redis

import pillarbox
from pillarbox import _native

REDIS_URL = os.environ.get("PILLARBOX_REDIS_URL", "redis://127.0.0.1:6390")
AMQP_URL = os.environ.get("PILLARBOX_AMQP_URL", "amqp://guest:guest@127.0.0.1:5673/%2f?management_port=15673")
PAYLOAD = b"x" * 100
ONE = int(os.environ.get("PB_BENCH_ONE", 3000))  # messages published one at a time
MANY = int(os.environ.get("PB_BENCH_MANY", 50_000))  # messages published in batches, then consumed
CELERY = int(os.environ.get("PB_BENCH_CELERY", 3000))  # Celery is slow: fewer
# Consumed by Celery and by Pillarbox with the same handler (one Redis INCR).
CELERY_CONSUME = int(os.environ.get("PB_BENCH_CELERY_CONSUME", 10_000))
# Celery's pools, each at the concurrency it is meant for on this machine:
# prefork a process per core, threads and gevent many at once. Its best is
# what Pillarbox is compared with.
CELERY_POOLS = [("prefork", os.cpu_count() or 2), ("threads", 16), ("gevent", 64)]
BATCH = 100
# The same worker settings for the Rust core and Python (those of the core's
# Redis benchmark): 16 handlers at once, a window of 200.
CONCURRENCY = int(os.environ.get("PB_BENCH_CONCURRENCY", 16))
PREFETCH = 200 - CONCURRENCY
ASYNC_CONCURRENCY = int(os.environ.get("PB_BENCH_ASYNC_CONCURRENCY", 16))

Rates = Dict[Tuple[str, str], float]


def timed(n: int, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return n / (time.perf_counter() - started)


def fresh(prefix: str) -> str:
    return f"bench.{prefix}.{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- Pillarbox


def pillarbox_publish(url: str, rates: Rates, backend: str) -> None:
    broker = pillarbox.connect(url)
    one, many = fresh("one"), fresh("many")
    for topic in (one, many):
        broker.ensure_group(topic, "g")
    rates[(backend, "publish one: Rust core")] = ONE / _native._bench_publish(url, one, ONE, 1, len(PAYLOAD))
    rates[(backend, "publish one: pillarbox")] = timed(ONE, lambda: [broker.publish(one, PAYLOAD) for _ in range(ONE)])
    rates[(backend, "publish 100s: Rust core")] = MANY / _native._bench_publish(url, many, MANY, BATCH, len(PAYLOAD))
    batch = [PAYLOAD] * BATCH
    rates[(backend, "publish 100s: pillarbox")] = timed(
        MANY, lambda: [broker.publish_many(many, batch) for _ in range(MANY // BATCH)]
    )
    broker.close()


def backlog(url: str) -> str:
    broker = pillarbox.connect(url)
    topic = fresh("consume")
    broker.ensure_group(topic, "g")
    for _ in range(MANY // BATCH):
        broker.publish_many(topic, [PAYLOAD] * BATCH)
    broker.close()
    return topic


def pillarbox_consume(url: str, rates: Rates, backend: str) -> None:
    topic = backlog(url)
    rates[(backend, "consume: Rust core")] = MANY / _native._bench_consume(url, topic, "g", MANY, CONCURRENCY, PREFETCH)

    def no_op(job: pillarbox.Job) -> None:
        pass

    async def no_op_async(job: pillarbox.Job) -> None:
        pass

    for label, handler, concurrency in (("def", no_op, CONCURRENCY), ("async def", no_op_async, ASYNC_CONCURRENCY)):
        topic = backlog(url)
        broker = pillarbox.connect(url)
        worker = pillarbox.Worker(
            broker, topic, "g", handler, concurrency=concurrency, prefetch=200 - concurrency, poll_wait=0.2
        )
        started = time.perf_counter()
        thread = threading.Thread(target=worker.run)
        thread.start()
        while worker.stats.succeeded < MANY:
            time.sleep(0.002)
        rates[(backend, f"consume: pillarbox {label}")] = MANY / (time.perf_counter() - started)
        worker.shutdown()
        thread.join()
        broker.close()


# ---------------------------------------------------------------- redis-py


def redis_py(rates: Rates) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    one, many = fresh("redispy-one"), fresh("redispy-many")
    rates[("redis", "publish one: redis-py XADD")] = timed(
        ONE, lambda: [r.xadd(one, {"payload": PAYLOAD}) for _ in range(ONE)]
    )

    def pipelined() -> None:
        for _ in range(MANY // BATCH):
            pipe = r.pipeline(transaction=False)
            for _ in range(BATCH):
                pipe.xadd(many, {"payload": PAYLOAD})
            pipe.execute()

    rates[("redis", "publish 100s: redis-py pipelined XADD")] = timed(MANY, pipelined)
    r.xgroup_create(many, "g", id="0")

    def consume() -> None:
        done = 0
        while done < MANY:
            reply = r.xreadgroup("g", "c", {many: ">"}, count=BATCH, block=1000)
            ids = [entry_id for _, entries in reply for entry_id, _ in entries]
            if ids:
                r.xack(many, "g", *ids)
                done += len(ids)

    rates[("redis", "consume: redis-py XREADGROUP + XACK")] = timed(MANY, consume)
    r.delete(one, many)


# ---------------------------------------------------------------- Celery

# Both sides run the same handler: one Redis INCR of a counter, which is
# also how the run is timed (from the first increment to the last), so a
# worker's start counts for neither.
CELERY_APP = textwrap.dedent(
    """
    import redis
    from celery import Celery
    app = Celery("benchtasks", broker="{url}")
    app.conf.broker_connection_retry_on_startup = True
    counter = redis.Redis.from_url("{url}")

    @app.task(ignore_result=True)
    def count(key):
        counter.incr(key)
    """
)


def counted_rate(r: "redis.Redis[bytes]", key: str, n: int, limit: float = 600) -> float:
    """Messages a second between the counter's first and its ``n``th increment."""
    deadline = time.monotonic() + limit
    while int(r.get(key) or 0) < 1:
        assert time.monotonic() < deadline, f"{key}: nothing counted"
        time.sleep(0.002)
    first = time.perf_counter()
    while int(r.get(key) or 0) < n:
        assert time.monotonic() < deadline, f"{key}: {int(r.get(key) or 0)} of {n} counted"
        time.sleep(0.002)
    return (n - 1) / (time.perf_counter() - first)


def celery(rates: Rates) -> None:
    from celery import group

    folder = Path(tempfile.mkdtemp())
    (folder / "benchtasks.py").write_text(CELERY_APP.format(url=REDIS_URL))
    sys.path.insert(0, str(folder))
    import benchtasks  # type: ignore[import-not-found]

    r = redis.Redis.from_url(REDIS_URL)
    key = fresh("celery-publish")
    rates[("redis", "publish one: Celery .delay()")] = timed(
        CELERY, lambda: [benchtasks.count.delay(key) for _ in range(CELERY)]
    )
    # Batched, as Pillarbox's publish_many is: a group of 100 calls sent at once.
    batch = group(benchtasks.count.s(key) for _ in range(BATCH))
    rates[("redis", "publish 100s: Celery group")] = timed(
        CELERY_CONSUME, lambda: [batch.apply_async() for _ in range(CELERY_CONSUME // BATCH)]
    )
    # The tasks above are not run: each pool gets a queue of its own.
    benchtasks.app.control.purge()
    for pool, concurrency in CELERY_POOLS:
        if pool == "gevent":
            try:
                import gevent  # noqa: F401
            except ImportError:
                print("gevent is not installed: Celery's gevent pool not measured", file=sys.stderr)
                continue
        key, queue = fresh(f"celery-{pool}"), fresh(f"celery-{pool}-queue")
        batch = group(benchtasks.count.s(key) for _ in range(BATCH))
        for _ in range(CELERY_CONSUME // BATCH):
            batch.apply_async(queue=queue)
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "benchtasks", "worker", f"--pool={pool}", "-c", str(concurrency),
             "-Q", queue, "--loglevel=WARNING"],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            rate = counted_rate(r, key, CELERY_CONSUME)
        finally:
            worker.terminate()
            worker.wait(30)
        rates[("redis", f"consume: Celery worker ({pool}, {concurrency}), INCR each")] = rate
        best = rates.get(("redis", "consume: Celery worker (best pool), INCR each"), 0.0)
        rates[("redis", "consume: Celery worker (best pool), INCR each")] = max(best, rate)


def pillarbox_counted(rates: Rates) -> None:
    """Pillarbox with Celery's handler: one INCR each, timed the same way."""
    r = redis.Redis.from_url(REDIS_URL)
    key = fresh("pillarbox-counted")
    broker = pillarbox.connect(REDIS_URL)
    topic = fresh("counted")
    broker.ensure_group(topic, "g")
    for _ in range(CELERY_CONSUME // BATCH):
        broker.publish_many(topic, [PAYLOAD] * BATCH)

    def count(job: pillarbox.Job) -> None:
        r.incr(key)

    worker = pillarbox.Worker(broker, topic, "g", count, concurrency=CONCURRENCY, prefetch=PREFETCH, poll_wait=0.2)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        rates[("redis", "consume: pillarbox def, INCR each")] = counted_rate(r, key, CELERY_CONSUME)
    finally:
        worker.shutdown()
        thread.join()
        broker.close()


# ---------------------------------------------------------------- pika


def pika_bench(rates: Rates) -> None:
    params = pika.URLParameters(AMQP_URL.split("?")[0])
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    queue = fresh("pika")
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    rates[("amqp", "publish one: pika, confirm each")] = timed(
        ONE, lambda: [channel.basic_publish("", queue, PAYLOAD, persistent) for _ in range(ONE)]
    )
    # Batches of 100 with publisher confirms, each batch's confirms awaited,
    # as Pillarbox's publish_many does (pika's blocking channel waits for
    # each confirm, so this uses its asynchronous connection).
    rates[("amqp", "publish 100s: pika, confirms per 100")] = MANY / pika_confirmed_batches(params, queue, MANY)
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=200)
    total = ONE + MANY
    seen = [0]

    def on_message(ch, method, properties, body) -> None:  # type: ignore[no-untyped-def]
        seen[0] += 1
        if seen[0] % BATCH == 0 or seen[0] == total:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if seen[0] == total:
            ch.stop_consuming()

    consumer.basic_consume(queue, on_message)
    rates[("amqp", "consume: pika (qos 200, ack per 100)")] = timed(total, consumer.start_consuming)
    channel.queue_delete(queue)
    connection.close()


def pika_confirmed_batches(params: "pika.URLParameters", queue: str, total: int) -> float:
    """Seconds to publish ``total`` persistent messages in batches of 100,
    sending the next batch once the broker confirmed the last one."""
    persistent = pika.BasicProperties(delivery_mode=2)
    state = {"sent": 0, "started": 0.0, "took": 0.0}
    pending: set = set()

    def send_batch(channel: Any) -> None:
        for _ in range(BATCH):
            channel.basic_publish("", queue, PAYLOAD, persistent)
            state["sent"] += 1
            pending.add(state["sent"])

    def on_confirm(frame: Any, channel: Any, connection: Any) -> None:
        method = frame.method
        if method.multiple:
            pending.difference_update([t for t in pending if t <= method.delivery_tag])
        else:
            pending.discard(method.delivery_tag)
        if pending:
            return
        if state["sent"] < total:
            send_batch(channel)
        else:
            state["took"] = time.perf_counter() - state["started"]
            connection.close()

    def on_channel(channel: Any, connection: Any) -> None:
        def confirmed(_frame: Any) -> None:
            state["started"] = time.perf_counter()
            send_batch(channel)

        channel.confirm_delivery(ack_nack_callback=lambda f: on_confirm(f, channel, connection), callback=confirmed)

    def on_open(connection: Any) -> None:
        connection.channel(on_open_callback=lambda channel: on_channel(channel, connection))

    connection = pika.SelectConnection(
        params, on_open_callback=on_open, on_close_callback=lambda *_: connection.ioloop.stop()
    )
    connection.ioloop.start()
    assert state["took"] > 0, "the confirmed batches did not finish"
    return float(state["took"])


# ---------------------------------------------------------------- report

GOALS = [
    # (backend, what, against, at least)
    ("redis", "publish 100s: pillarbox", "publish 100s: Rust core", 0.8),
    ("redis", "publish 100s: pillarbox", "publish 100s: Celery group", 50),
    ("redis", "publish one: pillarbox", "publish one: Celery .delay()", 2),
    ("redis", "publish one: pillarbox", "publish one: redis-py XADD", 1 / 1.2),
    ("redis", "consume: pillarbox def", "consume: Rust core", 0.5),
    ("redis", "consume: pillarbox async def", "consume: Rust core", 0.5),
    ("redis", "consume: pillarbox def, INCR each", "consume: Celery worker (best pool), INCR each", 50),
    ("amqp", "publish 100s: pillarbox", "publish 100s: Rust core", 0.8),
    ("amqp", "consume: pillarbox def", "consume: Rust core", 0.5),
    ("amqp", "consume: pillarbox async def", "consume: Rust core", 0.5),
]


def report(rates: Rates) -> None:
    print(f"\n{'backend':<8} {'what':<44} {'messages/s':>12}")
    for (backend, what), rate in rates.items():
        print(f"{backend:<8} {what:<44} {rate:>12,.0f}")
    print(f"\n{'goal':<82} {'ratio':>7}")
    for backend, what, against, floor in GOALS:
        if (backend, what) in rates and (backend, against) in rates:
            ratio = rates[(backend, what)] / rates[(backend, against)]
            verdict = "met" if ratio >= floor else "NOT MET"
            goal = f"{backend}: {what} / {against} >= {floor:.2f}"
            print(f"{goal:<82} {ratio:>7.2f} {verdict}")


def main() -> None:
    # PB_BENCH_ONLY=redis (or amqp, peers, or consume for Pillarbox's consume on Redis alone)
    only = set(os.environ.get("PB_BENCH_ONLY", "redis,amqp,peers").split(","))
    rates: Rates = {}
    if only == {"consume"}:
        pillarbox_consume(REDIS_URL, rates, "redis")
        return report(rates)
    if "redis" in only:
        pillarbox_publish(REDIS_URL, rates, "redis")
        pillarbox_consume(REDIS_URL, rates, "redis")
    if "peers" in only:
        redis_py(rates)
        celery(rates)
        pillarbox_counted(rates)
    if "amqp" in only:
        pillarbox_publish(AMQP_URL, rates, "amqp")
        pillarbox_consume(AMQP_URL, rates, "amqp")
    if "peers" in only:
        pika_bench(rates)
    report(rates)


if __name__ == "__main__":
    main()
