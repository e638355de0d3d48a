"""Schedulers in three languages sharing one broker's schedules: each tick
handled once, none missing, through a SIGKILL; and the `once` misfire
policy after every scheduler stopped.

On each URL (a backend that keeps schedules), three scheduler processes
run: the Rust command (`pillarbox scheduler`), a Python one and a Node one.
An every-second schedule (misfire `all`) runs for RUN_S seconds while a
Python worker (this process) records each tick it handles; the Node
scheduler is killed with SIGKILL a third of the way through and started
again KILLED_S seconds later. Then every tick between the first and the
last must have been handled exactly once. Prints what it measured: ticks
handled, duplicates delivered (published twice, handled once), missing.

Then every scheduler stops for GAP_S seconds and one starts again: an
every-second schedule with misfire `once` publishes one run for the gap,
not one per missed second.

    python schedules.py --rust PILLARBOX_BINARY --python PYTHON --node NODE URL...
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Dict, List

import pillarbox

RUN_S = 30
KILLED_S = 3
GAP_S = 6

PYTHON_SCHEDULER = "import pillarbox, sys; pillarbox.Scheduler(pillarbox.connect(sys.argv[1])).run()"
NODE_SCHEDULER = """
const { connect, Scheduler } = require('pillarbox')
connect(process.argv[1]).then((b) => {
  const s = new Scheduler(b)
  process.on('SIGTERM', () => s.shutdown())
  return s.run()
}).then(() => process.exit(0), (e) => { console.error(e); process.exit(1) })
"""


class Schedulers:
    """The three scheduler processes of one URL."""

    def __init__(self, args: argparse.Namespace, url: str, logs: str) -> None:
        self.commands = {
            "rust": [args.rust, "--url", url, "scheduler"],
            "python": [args.python, "-c", PYTHON_SCHEDULER, url],
            "node": [args.node, "-e", NODE_SCHEDULER, url],
        }
        self.logs = logs
        self.running: Dict[str, subprocess.Popen] = {}

    def start(self, language: str) -> None:
        log = open(os.path.join(self.logs, f"scheduler-{language}.log"), "ab")
        self.running[language] = subprocess.Popen(
            self.commands[language], stdout=log, stderr=log, env={**os.environ, "PILLARBOX_URL": ""}
        )

    def kill(self, language: str) -> None:
        self.running[language].send_signal(signal.SIGKILL)
        self.running[language].wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for language, process in self.running.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise AssertionError(f"the {language} scheduler did not stop on SIGTERM")


def record(broker: pillarbox.Broker, topic: str) -> tuple:
    """A worker recording the tick of each message it handles."""
    handled: List[float] = []

    def handle(job: pillarbox.Job) -> None:
        handled.append(job.message.scheduled_for.timestamp())

    worker = pillarbox.Worker(broker, topic, "g", handle, concurrency=4)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread, handled


def wait_until(done, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.1)
    return done()


def every_tick_once(args: argparse.Namespace, url: str, logs: str) -> List[str]:
    broker = pillarbox.connect(url)
    topic = f"xl.sched.{uuid.uuid4().hex[:8]}"
    broker.ensure_group(topic, "g")
    name = f"xl-every-second-{uuid.uuid4().hex[:8]}"
    problems: List[str] = []
    schedulers = Schedulers(args, url, logs)
    for language in ("rust", "python", "node"):
        schedulers.start(language)
    assert broker.upsert_schedule(name, topic, b"tick", every=1, misfire="all") == "created"
    worker, thread, handled = record(broker, topic)
    began = time.monotonic()
    time.sleep(RUN_S / 3)
    schedulers.kill("node")
    killed_at = time.monotonic() - began
    time.sleep(KILLED_S)
    schedulers.start("node")
    time.sleep(max(0.0, RUN_S - (time.monotonic() - began)))
    schedulers.stop_all()
    stopped = broker.schedules()
    last = next(s.last_run for s in stopped if s.name == name)
    # Everything published is handled before counting.
    wait_until(lambda: bool(handled) and max(handled) >= last.timestamp(), 30)
    time.sleep(1)
    worker.shutdown()
    thread.join(timeout=30)
    # Published twice (a scheduler killed between publishing and marking
    # the tick done), handled once: the idempotency store's count.
    published_twice = worker.stats.duplicates
    broker.remove_schedule(name)
    ticks = sorted(handled)
    distinct = sorted(set(ticks))
    span = int(round(distinct[-1] - distinct[0])) + 1 if distinct else 0
    missing = span - len(distinct)
    duplicates = len(ticks) - len(distinct)
    print(
        f"  {broker.backend}: 3 schedulers (Rust, Python, Node) for {RUN_S} s, Node killed (SIGKILL) at "
        f"{killed_at:.1f} s for {KILLED_S} s: {len(distinct)} ticks handled, {duplicates} handled twice, "
        f"{missing} missing, {published_twice} published twice"
    )
    if len(distinct) < RUN_S - 3:
        problems.append(f"{broker.backend}: only {len(distinct)} ticks in {RUN_S} s")
    if duplicates:
        problems.append(f"{broker.backend}: {duplicates} ticks handled twice")
    if missing:
        problems.append(f"{broker.backend}: {missing} ticks missing")
    broker.close()
    return problems


def once_after_a_gap(args: argparse.Namespace, url: str, logs: str) -> List[str]:
    broker = pillarbox.connect(url)
    topic = f"xl.gap.{uuid.uuid4().hex[:8]}"
    broker.ensure_group(topic, "g")
    name = f"xl-gap-{uuid.uuid4().hex[:8]}"
    schedulers = Schedulers(args, url, logs)
    schedulers.start("rust")
    broker.upsert_schedule(name, topic, b"tick", every=1, misfire="once")
    assert wait_until(lambda: broker.inspect(topic, "g").ready >= 2, 30), "no ticks before the gap"
    schedulers.stop_all()
    before = broker.inspect(topic, "g").ready
    time.sleep(GAP_S)
    schedulers.start("python")
    # The catch-up run, then the ticks as they come: count what arrived in
    # the first half second after the restart's first publish.
    assert wait_until(lambda: broker.inspect(topic, "g").ready > before, 30), "nothing after the gap"
    first = broker.inspect(topic, "g").ready
    schedulers.stop_all()
    broker.remove_schedule(name)
    caught_up = first - before
    print(f"  {broker.backend}: every scheduler stopped for {GAP_S} s, misfire=once: {caught_up} run(s) for the gap")
    broker.close()
    return [] if caught_up == 1 else [f"{broker.backend}: misfire=once published {caught_up} runs for one gap"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rust", required=True, help="the pillarbox command's binary")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--node", default="node")
    parser.add_argument("--logs", help="where the schedulers' output goes")
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args()
    logs = args.logs or tempfile.mkdtemp(prefix="pb-schedules-")
    os.makedirs(logs, exist_ok=True)
    print("schedules across languages (what was measured):")
    problems: List[str] = []
    for url in args.urls:
        problems += every_tick_once(args, url, logs)
        problems += once_after_a_gap(args, url, logs)
    for problem in problems:
        print(f"FAIL {problem} (logs: {logs})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
