"""The core's conformance scenarios, run with Python handlers.

The scenarios are the core's (the same list and assertions the Rust tests
run); each describes its handler as a script, acted out here by a Python
handler (a plain function or a coroutine) through the package's own
``Job``, ``Fatal`` and exception handling. Check a deployment with::

    python -c "import pillarbox.conformance as c; c.check('redis://localhost')"
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import time
from typing import Any, Callable, Dict, List, Optional

from . import _native
from ._handlers import Classifier, Fatal, invoker
from ._worker import _event_loop

# Calls through PyDLL keep the GIL: a handler that "blocks" holds it, as
# CPU-bound Python (or a C extension that never releases it) does.
_libc = ctypes.PyDLL(None)


def scenarios() -> List[str]:
    """The scenarios' names, in order."""
    return list(_native.scenarios())


def run_scenario(url: str, name: str, *, asynchronous: bool = False) -> Optional[str]:
    """Runs one scenario against ``url`` with plain-function handlers, or
    coroutine handlers when ``asynchronous``. Returns ``None`` when it passed
    or the reason it was skipped; raises ``AssertionError`` when it failed."""

    def make_invoker(script: str) -> Callable[[Any], Any]:
        behaviours = json.loads(script)["behaviours"]
        handler = _acts_out_async(behaviours) if asynchronous else _acts_out(behaviours)
        return invoker(handler, Classifier())

    with _event_loop(asynchronous) as loop:
        skipped: Optional[str] = _native.run_scenario(url, name, make_invoker, asynchronous, loop).wait()
    return skipped


def check(url: str, *, asynchronous: bool = False) -> bool:
    """Runs every scenario against ``url`` and prints a line for each; returns whether all passed."""
    ok = True
    for name in scenarios():
        started = time.monotonic()
        try:
            skipped = run_scenario(url, name, asynchronous=asynchronous)
        except AssertionError as failure:
            ok = False
            print(f"  FAIL  {name:<42} {failure}")
            continue
        if skipped is None:
            print(f"  pass  {name:<42} {time.monotonic() - started:6.2f}s")
        else:
            print(f"  skip  {name:<42} {skipped}")
    return ok


def _behaviour_for(behaviours: List[Dict[str, Any]], payload: bytes) -> Optional[Dict[str, Any]]:
    for b in behaviours:
        prefix = b.get("payload_prefix")
        if prefix is None or payload.startswith(prefix.encode()):
            return b
    return None


def _fail(failure: Dict[str, Any]) -> None:
    kind, message = failure.get("kind", "error"), failure.get("message", "")
    if failure["as"] == "fatal":
        raise Fatal(message, kind=kind)
    if failure["as"] == "panic":
        raise RuntimeError(message)
    raise type(kind, (Exception,), {})(message)


def _acts_out(behaviours: List[Dict[str, Any]]) -> Callable[[Any], None]:
    def handler(job: Any) -> None:
        b = _behaviour_for(behaviours, job.payload)
        if b is None:
            return
        work = b.get("work_ms", 0) / 1000
        if b.get("blocking"):
            _libc.usleep(int(work * 1_000_000))
        elif work:
            until = time.monotonic() + work
            while time.monotonic() < until:
                if job.cancelled:
                    raise TimeoutError("cancelled")
                time.sleep(min(0.01, max(0.0, until - time.monotonic())))
        if job.attempt <= b.get("fail_through", 0):
            _fail(b["failure"])

    return handler


def _acts_out_async(behaviours: List[Dict[str, Any]]) -> Callable[[Any], Any]:
    async def handler(job: Any) -> None:
        b = _behaviour_for(behaviours, job.payload)
        if b is None:
            return
        work = b.get("work_ms", 0) / 1000
        if b.get("blocking"):
            _libc.usleep(int(work * 1_000_000))
        elif work:
            await asyncio.sleep(work)
        if job.attempt <= b.get("fail_through", 0):
            _fail(b["failure"])

    return handler
