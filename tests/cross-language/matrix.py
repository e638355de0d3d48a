"""The cross-language matrix: on every backend that crosses processes, for
every ordered pair of languages (producer -> consumer, Rust, Python and
Node, the same language included), in separate processes:

- meta:     a message with every metadata field and a delay arrives intact,
            not before its time;
- retry:    failed once with a kind, it comes back as attempt 2 with the
            failure history the first attempt wrote;
- dead:     failed not-retryably, it is dead-lettered with its reason, which
            a third language reads and redrives; it comes back as attempt 1;
- idem:     two consumers of different languages share one idempotency
            store and race on one key: the effect happens once;
- tasks:    a task call from the producer's task layer runs in the
            consumer's task worker with its args and kwargs; an unknown
            task and a payload that is not an envelope dead-letter with
            kinds UnknownTask and InvalidEnvelope.

One long-lived agent per language (agent.rs, agent.py, agent.js) answers
JSON requests on stdin/stdout; the cells of a backend run concurrently.
Prints the matrix (backend x producer x consumer) and exits 1 if a cell
failed.

    python matrix.py --rust PATH --python PATH --node PATH URL...
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

LANGUAGES = ["rust", "python", "node"]
SCENARIOS = ["meta", "retry", "dead", "idem", "tasks"]
DELAY_MS = 1500
#: How long one consumer may take to reach what a scenario waits for (a Kafka
#: group join and rebalance on a busy 2-core machine included).
CONSUME_TIMEOUT_S = 90.0


class AgentError(Exception):
    pass


class Agent:
    """One language's agent process: requests out, answers matched by id."""

    def __init__(self, language: str, command: List[str], log_path: str) -> None:
        self.language = language
        self.command = command
        self.log_path = log_path
        self.next_id = 0
        self.waiting: Dict[int, asyncio.Future] = {}

    async def start(self) -> None:
        self.log = open(self.log_path, "wb")
        self.process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.log,
            limit=64 * 1024 * 1024,
        )
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                break
            answer = json.loads(line)
            future = self.waiting.pop(answer["id"], None)
            if future is not None and not future.done():
                future.set_result(answer)
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(AgentError(f"the {self.language} agent exited (see {self.log_path})"))

    async def __call__(self, op: str, timeout: float = 60.0, **fields: Any) -> Any:
        self.next_id += 1
        request = {"id": self.next_id, "op": op, **fields}
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = future
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        await self.process.stdin.drain()
        try:
            answer = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise AgentError(f"{self.language} {op}: no answer in {timeout:.0f}s") from None
        if "error" in answer:
            raise AgentError(f"{self.language} {op}: {answer['error']}")
        return answer["ok"]

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 60)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()
        await self.reader
        self.log.close()


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


class Cell:
    """One backend x producer x consumer: runs every scenario, keeps what failed."""

    def __init__(self, backend: str, url: str, store: Optional[str], producer: Agent, consumer: Agent,
                 third: Agent, rival: Agent, prefix: str, work: str) -> None:
        self.backend, self.url, self.store = backend, url, store
        self.p, self.c, self.third, self.rival = producer, consumer, third, rival
        self.prefix = prefix
        self.work = work
        self.failures: Dict[str, str] = {}

    def topic(self, scenario: str) -> str:
        return f"{self.prefix}.{scenario}"

    async def run(self) -> None:
        for scenario in SCENARIOS:
            try:
                await getattr(self, scenario)()
            except Exception as exc:  # the cell fails; the others go on
                self.failures[scenario] = f"{type(exc).__name__}: {exc}"

    async def consume(self, agent: Agent, name: str, until: Callable[[Dict[str, int]], bool],
                      **start: Any) -> Dict[str, Any]:
        await agent("start", name=name, url=self.url, **start)
        return await self.wait_and_stop([(agent, name)], until)

    async def wait_and_stop(self, running: List[Tuple[Agent, str]],
                            until: Callable[[Dict[str, int]], bool]) -> Any:
        """Polls the workers' stats (summed) until ``until`` holds, then stops them."""
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while True:
            figures = [await agent("stats", name=name) for agent, name in running]
            total = {k: sum(f[k] for f in figures) for k in figures[0]}
            if until(total):
                break
            if time.monotonic() > deadline:
                for agent, name in running:
                    await agent("stop", name=name)
                raise AssertionError(f"not done after {CONSUME_TIMEOUT_S:.0f}s: {total}")
            await asyncio.sleep(0.1)
        stopped = [await agent("stop", name=name) for agent, name in running]
        return stopped[0] if len(stopped) == 1 else stopped

    async def meta(self) -> None:
        topic = self.topic("meta")
        await self.c("ensure_group", url=self.url, topic=topic, group="g")
        payload = "{\"text\": \"Grüße, 世界 🌍\"}".encode() + bytes([0, 255, 10])
        message = {
            "payload": payload.hex(),
            "key": "customer-42",
            "idempotency_key": f"meta-{self.prefix}",
            "headers": {"greeting": "héllo wörld ✓", "query": "a&b=c+d%20e", "empty": ""},
            "content_type": "application/vnd.matrix+json; charset=utf-8",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "vendor=opaque,other=x&y",
            "delay_ms": DELAY_MS,
        }
        sent = await self.p("publish", url=self.url, topic=topic, message=message)
        got = await self.consume(self.c, f"{self.prefix}.meta", lambda s: s["succeeded"] >= 1,
                                 topic=topic, group="g", behaviour="ok")
        check(len(got["seen"]) == 1, f"handled {len(got['seen'])} times, not once")
        seen = got["seen"][0]
        for field in ("key", "idempotency_key", "headers", "content_type", "traceparent", "tracestate", "payload"):
            check(seen[field] == message[field], f"{field}: sent {message[field]!r}, got {seen[field]!r}")
        check(seen["id"] == sent["id"], f"id: published {sent['id']}, got {seen['id']}")
        check(seen["attempt"] == 1, f"attempt {seen['attempt']}")
        due = seen["deliver_at"]
        check(due is not None and sent["at"] + DELAY_MS <= due <= sent["at"] + DELAY_MS + 5000,
              f"deliver_at {due} is not the publish time {sent['at']} + {DELAY_MS} ms")
        check(seen["received_at"] >= due, f"handled {due - seen['received_at']} ms before its time")
        check(abs(seen["published_at"] - sent["at"]) < 5000, "published_at is not the publish time")

    async def retry(self) -> None:
        topic = self.topic("retry")
        await self.c("ensure_group", url=self.url, topic=topic, group="g")
        await self.p("publish", url=self.url, topic=topic, message={"payload": b"retry me".hex()})
        got = await self.consume(self.c, f"{self.prefix}.retry", lambda s: s["succeeded"] >= 1,
                                 topic=topic, group="g", behaviour="fail_once")
        attempts = [(s["attempt"], s["failures"]) for s in got["seen"]]
        history = {"kind": "Flaky", "message": "first attempt fails"}
        check(attempts == [(1, None), (2, history)], f"attempts and failure history: {attempts}")
        check(got["stats"]["retried"] == 1, f"stats {got['stats']}")

    async def dead(self) -> None:
        topic = self.topic("dead")
        await self.c("ensure_group", url=self.url, topic=topic, group="g")
        sent = await self.p("publish", url=self.url, topic=topic, message={"payload": b"doomed".hex()})
        got = await self.consume(self.c, f"{self.prefix}.dead", lambda s: s["dead_lettered"] >= 1,
                                 topic=topic, group="g", behaviour="fatal")
        check(got["stats"]["retried"] == 0, f"a fatal failure was retried: {got['stats']}")
        letters = await self.third("dead_letters", url=self.url, topic=topic, group="g")
        check(len(letters) == 1, f"{self.third.language} lists {len(letters)} dead letters")
        d = letters[0]
        reason = (d["message_id"], d["payload"], d["topic"], d["group"], d["attempts"], d["cause"],
                  d["error_kind"], d["error_message"])
        expected = (sent["id"], b"doomed".hex(), topic, "g", 1, "not_retryable", "Rejected", "no retry can fix this")
        check(reason == expected, f"{self.third.language} reads the reason {reason}, not {expected}")
        moved = await self.third("redrive", url=self.url, topic=topic, group="g")
        check(moved == 1, f"{self.third.language} redrove {moved}")
        again = await self.consume(self.c, f"{self.prefix}.dead2", lambda s: s["succeeded"] >= 1,
                                   topic=topic, group="g", behaviour="ok")
        check([(s["attempt"], s["payload"]) for s in again["seen"]] == [(1, b"doomed".hex())],
              f"the redriven message came back as {[(s['attempt'], s['payload']) for s in again['seen']]}")
        left = await self.third("dead_letters", url=self.url, topic=topic, group="g")
        check(left == [], f"{len(left)} dead letters left after the redrive")

    async def idem(self) -> None:
        topic = self.topic("idem")
        effects = os.path.join(self.work, f"{self.prefix}.effects")
        await self.c("ensure_group", url=self.url, topic=topic, group="g")
        common = dict(url=self.url, topic=topic, group="g", behaviour="effect", effects=effects,
                      sleep_ms=400, busy_key_delay_ms=300, store=self.store)
        names = [(self.c, f"{self.prefix}.idem.c"), (self.rival, f"{self.prefix}.idem.r")]
        for agent, name in names:
            await agent("start", name=name, **common)
        key = f"once-{self.prefix}"
        for n in range(2):
            await self.p("publish", url=self.url, topic=topic,
                         message={"payload": f"race {n}".encode().hex(), "idempotency_key": key})
        stopped = await self.wait_and_stop(names, lambda s: s["succeeded"] + s["duplicates"] >= 2)
        with open(effects) as f:
            lines = f.read().splitlines()
        check(len(lines) == 1 and lines[0].startswith(key), f"the effect ran {len(lines)} times: {lines}")
        total = {k: sum(s["stats"][k] for s in stopped) for k in ("succeeded", "duplicates")}
        check(total == {"succeeded": 1, "duplicates": 1}, f"stats {total}")

    async def tasks(self) -> None:
        topic = self.topic("tasks")
        await self.c("ensure_group", url=self.url, topic=topic, group="workers")
        args = ["ünï ✓", 2, [1, {"a": None}]]
        kwargs = {"k": "v&=+%", "n": 3.5}
        await self.p("task_delay", url=self.url, topic=topic, task="matrix.record", args=args, kwargs=kwargs)
        await self.p("task_delay", url=self.url, topic=topic, task="matrix.missing", args=[], kwargs={})
        await self.p("publish", url=self.url, topic=topic, message={"payload": b"\xffnot json".hex()})
        got = await self.consume(self.c, f"{self.prefix}.tasks",
                                 lambda s: s["succeeded"] >= 1 and s["dead_lettered"] >= 2,
                                 topic=topic, group="workers", behaviour="tasks")
        # A JavaScript task gets keyword arguments as one last argument.
        expected = {"args": args + [kwargs]} if self.c.language == "node" else {"args": args, "kwargs": kwargs}
        check(got["seen"] == [expected], f"the task ran with {got['seen']}, not {expected}")
        letters = await self.c("dead_letters", url=self.url, topic=topic, group="workers")
        kinds = sorted((d["error_kind"], d["cause"]) for d in letters)
        check(kinds == [("InvalidEnvelope", "not_retryable"), ("UnknownTask", "not_retryable")],
              f"dead letters {kinds}")


def backend_of(url: str) -> str:
    return url.split("://", 1)[0]


async def run_backend(url: str, store: Optional[str], agents: Dict[str, Agent], run_id: str,
                      work: str) -> List[Cell]:
    backend = backend_of(url)
    cells = []
    for p, c in itertools.product(LANGUAGES, repeat=2):
        others = [lang for lang in LANGUAGES if lang not in (p, c)]
        after_c = LANGUAGES[(LANGUAGES.index(c) + 1) % 3]
        third = others[0] if others else after_c
        rival = p if p != c else after_c
        prefix = f"mx{run_id}.{backend}.{p[0]}{c[0]}"
        cells.append(Cell(backend, url, store, agents[p], agents[c], agents[third], agents[rival], prefix, work))
    await asyncio.gather(*(cell.run() for cell in cells))
    return cells


def print_matrix(results: List[Tuple[str, List[Cell], float]]) -> bool:
    print()
    print(f"{'backend':<9} {'producer':<9} {'consumer':<9} {'result':<7} " + " ".join(f"{s:<6}" for s in SCENARIOS))
    passed = 0
    total = 0
    for backend, cells, seconds in results:
        for cell in cells:
            total += 1
            ok = not cell.failures
            passed += ok
            marks = " ".join(f"{'fail' if s in cell.failures else 'ok':<6}" for s in SCENARIOS)
            print(f"{backend:<9} {cell.p.language:<9} {cell.c.language:<9} {'pass' if ok else 'FAIL':<7} {marks}")
        print(f"{'':<9} ({seconds:.0f} s)")
    print(f"\n{passed} of {total} cells passed")
    for backend, cells, _ in results:
        for cell in cells:
            for scenario, why in cell.failures.items():
                print(f"  {backend} {cell.p.language} -> {cell.c.language} {scenario}: {why}")
    return passed == total


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rust", required=True, help="the Rust agent's binary")
    parser.add_argument("--python", required=True, help="the Python interpreter with pillarbox installed")
    parser.add_argument("--node", default="node", help="the Node interpreter (pillarbox on NODE_PATH)")
    parser.add_argument("--store", help="the shared idempotency store for backends that have none of their own")
    parser.add_argument("--logs", help="where the agents' stderr goes (default: a temporary folder)")
    parser.add_argument("urls", nargs="+")
    options = parser.parse_args()

    here = os.path.dirname(os.path.abspath(__file__))
    work = tempfile.mkdtemp(prefix="pillarbox-matrix-")
    logs = options.logs or work
    os.makedirs(logs, exist_ok=True)
    commands = {
        "rust": [options.rust],
        "python": [options.python, os.path.join(here, "agent.py")],
        "node": [options.node, os.path.join(here, "agent.js")],
    }
    agents = {lang: Agent(lang, cmd, os.path.join(logs, f"agent-{lang}.log")) for lang, cmd in commands.items()}
    for agent in agents.values():
        await agent.start()
    run_id = f"{int(time.time()) % 100000}{os.getpid() % 1000}"
    results = []
    try:
        for url in options.urls:
            backend = backend_of(url)
            # The backend's own store where it has one (embedded, Redis), a shared one otherwise.
            store = None if backend in ("sqlite", "redis", "rediss") else options.store
            started = time.monotonic()
            print(f"{backend}: 9 cells...", flush=True)
            cells = await run_backend(url, store, agents, run_id, work)
            results.append((backend, cells, time.monotonic() - started))
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        for agent in agents.values():
            await agent.close()
    ok = print_matrix(results)
    if not ok:
        print(f"(the agents' logs: {logs})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
