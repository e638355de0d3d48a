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
from typing import Callable, Dict, Tuple

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

CELERY_APP = textwrap.dedent(
    """
    import time, redis
    from celery import Celery
    app = Celery("benchtasks", broker="{url}")
    app.conf.broker_connection_retry_on_startup = True
    counter = redis.Redis.from_url("{url}")

    @app.task
    def no_op():
        if counter.incr("{key}") == 1:
            counter.set("{key}:first", time.time())
        else:
            counter.set("{key}:last", time.time())
    """
)


def celery(rates: Rates) -> None:
    key = fresh("celery")
    folder = Path(tempfile.mkdtemp())
    (folder / "benchtasks.py").write_text(CELERY_APP.format(url=REDIS_URL, key=key))
    sys.path.insert(0, str(folder))
    import benchtasks  # type: ignore[import-not-found]

    rates[("redis", "publish one: Celery .delay()")] = timed(CELERY, lambda: [benchtasks.no_op.delay() for _ in range(CELERY)])
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "benchtasks", "worker", "--pool=prefork", "-c", "2", "--loglevel=WARNING"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    r = redis.Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + 300
    while int(r.get(key) or 0) < CELERY and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.terminate()
    worker.wait(30)
    first, last = float(r.get(f"{key}:first") or 0), float(r.get(f"{key}:last") or 0)
    if last > first:
        rates[("redis", "consume: Celery worker (prefork, 2)")] = (CELERY - 1) / (last - first)


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
    tx = connection.channel()
    tx.tx_select()

    def batches() -> None:
        for _ in range(MANY // BATCH):
            for _ in range(BATCH):
                tx.basic_publish("", queue, PAYLOAD, persistent)
            tx.tx_commit()

    rates[("amqp", "publish 100s: pika, a transaction per 100")] = timed(MANY, batches)
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


# ---------------------------------------------------------------- report

GOALS = [
    # (backend, what, against, at least)
    ("redis", "publish 100s: pillarbox", "publish 100s: Rust core", 0.8),
    ("redis", "publish 100s: pillarbox", "publish one: Celery .delay()", 50),
    ("redis", "publish one: pillarbox", "publish one: Celery .delay()", 2),
    ("redis", "publish one: pillarbox", "publish one: redis-py XADD", 1 / 1.2),
    ("redis", "consume: pillarbox def", "consume: Rust core", 0.5),
    ("redis", "consume: pillarbox async def", "consume: Rust core", 0.5),
    ("redis", "consume: pillarbox def", "consume: Celery worker (prefork, 2)", 50),
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
    if "amqp" in only:
        pillarbox_publish(AMQP_URL, rates, "amqp")
        pillarbox_consume(AMQP_URL, rates, "amqp")
    if "peers" in only:
        pika_bench(rates)
    report(rates)


if __name__ == "__main__":
    main()
