"""The Python half of the cross-language test: publish a task call, or run
the worker until N calls are handled, appending what each did to OUT.

    python python_side.py publish URL TOPIC
    python python_side.py work URL TOPIC OUT N
"""

import sys
import threading
import time

import pillarbox

mode, url, topic = sys.argv[1:4]
app = pillarbox.App(url, default_topic=topic)


@app.task(name="greet", idempotency_key=lambda who, **kw: f"greet-{who}")
def greet(who: str, punctuation: str = "!") -> None:
    with open(sys.argv[4], "a") as out:
        out.write(f"python says hello {who}{punctuation}\n")


if mode == "publish":
    greet.delay("from python", punctuation="?")
    greet.delay("from python", punctuation="?")  # same key: must run once on the other side
else:
    [worker] = app.workers(poll_wait=0.05)
    wanted = int(sys.argv[5])
    threading.Thread(target=worker.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while worker.stats.succeeded + worker.stats.duplicates < wanted and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.shutdown()
    time.sleep(0.2)
    sys.exit(0 if worker.stats.succeeded + worker.stats.duplicates >= wanted else 1)
