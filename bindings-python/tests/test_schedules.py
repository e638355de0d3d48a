"""Schedules from Python: kept by the broker, listed, paused, resumed and
removed; a scheduler publishing each tick once however many run; bad
definitions refused naming the option. Every backend keeps them."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

import pillarbox
import pillarbox.aio


def test_upsert_list_pause_resume_remove(url: str, topic: str) -> None:
    broker = pillarbox.connect(url)
    name = f"nightly-{uuid.uuid4().hex[:8]}"
    assert broker.upsert_schedule(name, topic, b"import", cron="30 2 * * *", zone="Europe/Berlin") == "created"
    # A redeploy changes nothing; another definition replaces it, and says so.
    assert broker.upsert_schedule(name, topic, b"import", cron="30 2 * * *", zone="Europe/Berlin") == "unchanged"
    assert broker.upsert_schedule(name, topic, b"import", cron="0 3 * * *", zone="Europe/Berlin") == "updated"
    (info,) = [s for s in broker.schedules() if s.name == name]
    assert (info.cron, info.zone, info.every, info.topic, info.misfire, info.paused) == (
        "0 3 * * *", "Europe/Berlin", None, topic, "once", False,
    )
    assert info.next_run is not None and info.next_run > datetime.now(timezone.utc)
    assert info.next_run.astimezone(timezone.utc).minute == 0
    assert info.last_run is None and info.last_message_id is None
    assert broker.pause_schedule(name) is True
    paused = [s for s in broker.schedules() if s.name == name][0]
    assert paused.paused and paused.next_run is None
    assert broker.resume_schedule(name) is True
    # Run now: a message at once, the schedule's state as it was.
    broker.ensure_group(topic, "g")
    message_id = broker.run_schedule_now(name)
    assert isinstance(message_id, str) and message_id
    assert broker.run_schedule_now(f"{name}-missing") is None
    assert [s for s in broker.schedules() if s.name == name][0].last_run is None
    assert broker.remove_schedule(name) is True
    assert broker.remove_schedule(name) is False
    assert broker.pause_schedule(name) is False
    broker.close()


def test_three_schedulers_publish_each_tick_once(url: str, topic: str) -> None:
    broker = pillarbox.connect(url)
    broker.ensure_group(topic, "g")
    name = f"every-second-{uuid.uuid4().hex[:8]}"
    # `all`: a pass held up past a tick on a busy machine still publishes it.
    broker.upsert_schedule(name, topic, b"tick", every=1, key="k", misfire="all")
    schedulers = [pillarbox.Scheduler(pillarbox.connect(url) if broker.backend != "memory" else broker) for _ in range(3)]
    threads = [threading.Thread(target=s.run) for s in schedulers]
    for thread in threads:
        thread.start()
    seen = []

    def handle(job: pillarbox.Job) -> None:
        seen.append(job.message)

    worker = pillarbox.Worker(broker, topic, "g", handle, concurrency=4)
    runner = threading.Thread(target=worker.run)
    runner.start()
    # Until four ticks arrived, or a generous bound.
    deadline = time.monotonic() + 30
    while len(seen) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    for s in schedulers:
        s.shutdown()
    for thread in threads:
        thread.join(timeout=30)
    time.sleep(1.5)  # a tick published as they stopped reaches the handler
    worker.shutdown()
    runner.join(timeout=30)
    broker.remove_schedule(name)
    ticks = [m.scheduled_for for m in seen]
    print(f"{broker.backend}: {len(ticks)} ticks handled, {len(set(ticks))} distinct")
    assert len(ticks) >= 4, ticks
    assert len(set(ticks)) == len(ticks), "a tick handled twice"
    ticks.sort()
    assert all(b - a == timedelta(seconds=1) for a, b in zip(ticks, ticks[1:])), "a tick missing"
    assert all(m.schedule == name and m.key == "k" and m.payload == b"tick" for m in seen)
    assert all(m.idempotency_key == f"schedule:{name}:{int(m.scheduled_for.timestamp() * 1000)}" for m in seen)
    assert not any(t.is_alive() for t in threads) and not runner.is_alive()


@pytest.mark.parametrize(
    "options,option",
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "0 3 * * *", "zone": "Mars/Olympus"}, "zone"),
        ({"every": 0}, "every"),
        ({"every": 0.5}, "every"),
        ({"every": -1}, "every"),
        ({"every": "10"}, "every"),
        ({}, "cron"),
        ({"cron": "* * * * *", "every": 60}, "cron"),
        ({"every": 60, "zone": "UTC"}, "zone"),
        ({"cron": "* * * * *", "misfire": "sometimes"}, "misfire"),
        ({"cron": "* * * * *", "misfire": "all", "misfire_cap": 0}, "misfire_cap"),
        ({"cron": 5}, "cron"),
        ({"crn": "* * * * *"}, "crn"),
    ],
    ids=repr,
)
def test_bad_definitions_are_refused_naming_the_option(options: dict, option: str) -> None:
    broker = pillarbox.connect("memory://")
    with pytest.raises(pillarbox.InvalidOption) as caught:
        broker.upsert_schedule("s", "t", b"x", **options)
    assert caught.value.option == option, caught.value
    assert broker.schedules() == []


def test_the_asyncio_broker_keeps_schedules_too() -> None:
    import asyncio

    async def main() -> None:
        broker = await pillarbox.aio.connect("memory://")
        assert await broker.upsert_schedule("s", "t", "x", every=timedelta(minutes=5)) == "created"
        (info,) = await broker.schedules()
        assert info.every == timedelta(minutes=5) and info.cron is None
        assert await broker.remove_schedule("s")

    asyncio.run(main())


def test_an_app_schedules_a_task_and_its_worker_runs_the_ticks(sqlite_url: str) -> None:
    app = pillarbox.App(sqlite_url)
    calls = []

    @app.task(name="reports.build", topic="reports")
    def build(kind: str, *, tick: int = 0) -> None:
        calls.append(kind)

    assert app.schedule("reports-every-second", build, every=1, args=["daily"], misfire="all") == "created"
    assert app.schedule("reports-every-second", "reports.build", every=1, args=["daily"], misfire="all") == "unchanged"
    runners = app.runners(concurrency=2)
    assert any(isinstance(r, pillarbox.Scheduler) for r in runners), "the worker runs a scheduler by default"
    assert not any(isinstance(r, pillarbox.Scheduler) for r in app.runners(scheduler=False))
    threads = [threading.Thread(target=r.run) for r in runners]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    for r in runners:
        r.shutdown()
    for thread in threads:
        thread.join(timeout=30)
    assert calls[:2] == ["daily", "daily"], calls
    (info,) = app.broker.schedules()
    assert info.topic == "reports" and info.last_run is not None


UPSERT = """
import sys, pillarbox
broker = pillarbox.connect(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # all start together
print(broker.upsert_schedule(sys.argv[2], "reports", b"build", cron="30 2 * * *", zone="Europe/Berlin"))
"""


def test_fifty_processes_upserting_one_schedule_leave_one(url: str) -> None:
    import subprocess
    import sys

    broker = pillarbox.connect(url)
    if broker.backend == "memory":
        return  # memory:// is one process's
    name = f"deploy-{uuid.uuid4().hex[:8]}"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", UPSERT, url, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(50)
    ]
    # Once each has connected, release them at once.
    for p in processes:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in processes:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outcomes = [p.communicate(timeout=120)[0].strip() for p in processes]
    assert all(p.returncode == 0 for p in processes), outcomes
    assert sorted(set(outcomes)) == ["created", "unchanged"] and outcomes.count("created") == 1, outcomes
    assert [s.name for s in broker.schedules()].count(name) == 1
    assert broker.remove_schedule(name)
