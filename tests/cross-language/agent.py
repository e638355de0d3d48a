"""The Python side of the cross-language matrix (see matrix.py): reads
JSON requests on stdin, one a line, runs each on a thread of its own with
the Python package's public API, and answers on stdout with the same id.
The Node (agent.js) and Rust (agent.rs) agents answer the same requests."""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import timedelta
from typing import Any, Callable, Dict

import pillarbox

write_lock = threading.Lock()
brokers: Dict[str, pillarbox.Broker] = {}
brokers_lock = threading.Lock()
workers: Dict[str, "Running"] = {}
apps: Dict[str, pillarbox.App] = {}


def app(url: str, topic: str) -> pillarbox.App:
    """A task app publishing to and running ``topic``, one per topic."""
    with brokers_lock:
        if (url, topic) not in apps:
            apps[url, topic] = pillarbox.App(url, default_topic=topic)
        return apps[url, topic]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms(dt: Any) -> Any:
    return None if dt is None else round(dt.timestamp() * 1000)


def broker(url: str) -> pillarbox.Broker:
    with brokers_lock:
        if url not in brokers:
            brokers[url] = pillarbox.connect(url)
        return brokers[url]


class Flaky(Exception):
    """A retryable failure whose kind is this class's name."""


def observe(job: pillarbox.Job) -> Dict[str, Any]:
    m = job.message
    failures = m.failures
    return {
        "id": m.id,
        "payload": m.payload.hex(),
        "key": m.key,
        "idempotency_key": m.idempotency_key,
        "headers": m.headers,
        "content_type": m.content_type,
        "traceparent": m.traceparent,
        "tracestate": m.tracestate,
        "attempt": job.attempt,
        "published_at": ms(m.published_at),
        "deliver_at": ms(m.deliver_at),
        "failures": None
        if failures is None
        else {"kind": failures.last_error_kind, "message": failures.last_error},
        "received_at": now_ms(),
    }


def handler(spec: Dict[str, Any], seen: list) -> Callable[[pillarbox.Job], None]:
    behaviour = spec["behaviour"]

    def handle(job: pillarbox.Job) -> None:
        seen.append(observe(job))
        if behaviour == "fail_once" and job.attempt == 1:
            raise Flaky("first attempt fails")
        if behaviour == "fatal":
            raise pillarbox.Fatal("no retry can fix this", kind="Rejected")
        if behaviour == "effect":
            time.sleep(spec.get("sleep_ms", 0) / 1000)
            with open(spec["effects"], "a") as out:
                out.write(f"{job.message.idempotency_key} python\n")

    return handle


class Running:
    def __init__(self, worker: pillarbox.Worker, seen: list) -> None:
        self.worker = worker
        self.seen = seen
        self.thread = threading.Thread(target=worker.run, daemon=True)
        self.thread.start()

    def stop(self) -> Dict[str, Any]:
        self.worker.shutdown()
        self.thread.join()
        return {"seen": self.seen, "stats": stats(self.worker)}


def stats(worker: pillarbox.Worker) -> Dict[str, int]:
    s = worker.stats
    return {
        "succeeded": s.succeeded,
        "retried": s.retried,
        "dead_lettered": s.dead_lettered,
        "duplicates": s.duplicates,
    }


QUICK = {"poll_wait": 0.2, "retry": pillarbox.RetryPolicy(max_retries=3, initial_delay=0.2, jitter=0.0)}


def start(r: Dict[str, Any]) -> None:
    seen: list = []
    options: Dict[str, Any] = dict(QUICK, concurrency=r.get("concurrency", 1), prefetch=0)
    if r.get("store"):
        options["idempotency_store"] = r["store"]
    if r.get("busy_key_delay_ms") is not None:
        options["busy_key_delay"] = timedelta(milliseconds=r["busy_key_delay_ms"])
    if r["behaviour"] == "tasks":
        tasks = pillarbox.App(r["url"], default_topic=r["topic"])

        @tasks.task(name="matrix.record")
        def record(*args: Any, **kwargs: Any) -> None:
            seen.append({"args": list(args), "kwargs": kwargs})

        (worker,) = tasks.workers(**options)
    else:
        worker = pillarbox.Worker(broker(r["url"]), r["topic"], r["group"], handler(r, seen), **options)
    workers[r["name"]] = Running(worker, seen)


def publish(r: Dict[str, Any]) -> Dict[str, Any]:
    m = r["message"]
    at = now_ms()
    id = broker(r["url"]).publish(
        r["topic"],
        bytes.fromhex(m["payload"]),
        key=m.get("key"),
        idempotency_key=m.get("idempotency_key"),
        headers=m.get("headers"),
        content_type=m.get("content_type"),
        delay=None if m.get("delay_ms") is None else timedelta(milliseconds=m["delay_ms"]),
        traceparent=m.get("traceparent"),
        tracestate=m.get("tracestate"),
    )
    return {"id": id, "at": at}


def task_delay(r: Dict[str, Any]) -> str:
    return app(r["url"], r["topic"]).signature(r["task"]).apply_async(r["args"], r["kwargs"])


def dead_letters(r: Dict[str, Any]) -> list:
    return [
        {
            "message_id": d.message.id,
            "payload": d.message.payload.hex(),
            "attempt": d.message.attempt,
            "topic": d.reason.topic,
            "group": d.reason.group,
            "attempts": d.reason.attempts,
            "cause": d.reason.cause,
            "error_kind": d.reason.error_kind,
            "error_message": d.reason.error_message,
        }
        for d in broker(r["url"]).dead_letters(r["topic"], r["group"])
    ]


OPS: Dict[str, Callable[[Dict[str, Any]], Any]] = {
    "ensure_group": lambda r: broker(r["url"]).ensure_group(r["topic"], r["group"]),
    "publish": publish,
    "task_delay": task_delay,
    "start": start,
    "stats": lambda r: stats(workers[r["name"]].worker),
    "stop": lambda r: workers.pop(r["name"]).stop(),
    "dead_letters": dead_letters,
    "redrive": lambda r: broker(r["url"]).redrive(r["topic"], r["group"]),
}


def serve(request: Dict[str, Any]) -> None:
    try:
        answer = {"id": request["id"], "ok": OPS[request["op"]](request)}
    except Exception as exc:  # reported to the matrix, which fails the cell
        answer = {"id": request["id"], "error": f"{type(exc).__name__}: {exc}"}
    with write_lock:
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def main() -> None:
    for line in sys.stdin:
        if line.strip():
            threading.Thread(target=serve, args=(json.loads(line),), daemon=True).start()
    for running in list(workers.values()):
        running.stop()


if __name__ == "__main__":
    main()
