"""Quickstart in Python, on the embedded default: no server needed.

    pip install ./bindings-python
    python examples/python/quickstart.py

A producer publishes "send a welcome email" tasks; a worker handles them with
a handler that sometimes fails: a retry with backoff, a message dead-lettered
with its reason, an idempotent duplicate skipped, a delayed message, and the
inspection figures. Set ``PILLARBOX_URL`` to run it against another backend.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time

import pillarbox

TOPIC, GROUP = "emails", "welcome-sender"


def main() -> None:
    url = os.environ.get("PILLARBOX_URL") or f"sqlite://{tempfile.mkdtemp()}/quickstart.db"
    broker = pillarbox.connect(url)
    print(f"broker: {broker.url}\n")
    broker.ensure_group(TOPIC, GROUP)

    # --- the producer ----------------------------------------------------------
    users = [(1, "ada@example.com"), (2, "grace@example.com"), (3, "flaky@example.com"), (4, "not-an-address")]
    broker.publish_many(
        TOPIC,
        [
            pillarbox.Message(
                json.dumps({"user": user, "email": email}),
                key=f"user-{user}",
                idempotency_key=f"welcome-{user}",
                content_type="application/json",
            )
            for user, email in users
        ],
    )
    # The same task again (a double click): same idempotency key, handled once.
    broker.publish(TOPIC, json.dumps({"user": 2, "email": "grace@example.com"}), idempotency_key="welcome-2")
    # A reminder that must not go out before one second from now.
    broker.publish(TOPIC, json.dumps({"user": 1, "email": "ada@example.com", "reminder": True}), delay=1.0)

    # --- the worker ------------------------------------------------------------
    started = time.monotonic()

    def send(job: pillarbox.Job) -> None:
        task = job.json()
        line = f"[{time.monotonic() - started:5.2f}s] attempt {job.attempt} for {task['email']:<18}"
        if "@" not in task["email"]:
            print(f"{line} -> invalid address: not retryable")
            raise pillarbox.Fatal(f"`{task['email']}` is not an email address", kind="InvalidAddress")
        if task["email"].startswith("flaky") and job.attempt < 3:
            print(f"{line} -> SMTP timeout, will retry")
            raise TimeoutError("SMTP timeout")
        print(f"{line} -> {'reminder' if task.get('reminder') else 'welcome email'} sent")

    worker = pillarbox.Worker(
        broker,
        TOPIC,
        GROUP,
        send,
        concurrency=4,
        retry=pillarbox.RetryPolicy(max_retries=3, initial_delay=0.3),
        poll_wait=0.1,
    )
    threading.Timer(2.5, worker.shutdown).start()
    worker.run()

    s = worker.stats
    print(
        f"\nworker: {s.received} received, {s.succeeded} succeeded, {s.retried} retried, "
        f"{s.dead_lettered} dead-lettered, {s.duplicates} duplicate skipped"
    )
    figures = broker.inspect(TOPIC, GROUP)
    print(
        f"broker: ready {figures.ready}, in flight {figures.in_flight}, "
        f"waiting {figures.waiting}, dead letters {figures.dead_letters}"
    )
    for dead in broker.dead_letters(TOPIC, GROUP):
        r = dead.reason
        print(f"dead letter: {r.cause} after {r.attempts} attempt(s): {r.error_kind}: {r.error_message}")
    broker.close()


if __name__ == "__main__":
    main()
