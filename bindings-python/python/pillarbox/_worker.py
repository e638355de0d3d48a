"""Workers: run a Python handler over one group of one topic.

The worker runtime is the core's, in Rust: retries with backoff, dead
letters, idempotency, leases, concurrency, timeouts and graceful shutdown
behave exactly as in Rust and Node. Plain functions run on up to
``concurrency`` threads of the worker's own, which wait for work without
the GIL; ``async def`` handlers run on an asyncio loop, up to
``concurrency`` at once. Leases are
renewed by the runtime's own threads, so a handler that holds the GIL for
minutes never loses its message to another consumer.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Dict, Optional, Protocol, Union

from . import _native
from ._calls import checked
from ._durations import seconds
from ._handlers import Classifier, ExceptionTypes, invoker, is_async

log = logging.getLogger("pillarbox")

Seconds = Union[float, timedelta]

# The core's defaults (pillarbox::surface): none is written here.
_RETRY: Dict[str, Any] = _native.DEFAULTS["retry"]
_WORKER: Dict[str, Any] = _native.DEFAULTS["worker"]


@dataclass(frozen=True)
class RetryPolicy:
    """The retry budget: ``max_retries`` retries after the first attempt, retry
    ``n`` waiting ``min(max_delay, initial_delay * multiplier ** (n - 1))``
    less up to ``jitter`` of it at random. Waits happen on the broker side."""

    max_retries: int = _RETRY["max_retries"]
    initial_delay: Seconds = _RETRY["initial_delay"]
    multiplier: float = _RETRY["multiplier"]
    max_delay: Seconds = _RETRY["max_delay"]
    jitter: float = _RETRY["jitter"]


RetryPolicy.__init__ = checked(RetryPolicy.__init__)  # type: ignore[method-assign]


class Worker:
    """Runs ``handler`` on the messages of ``group`` on ``topic``.

    A handler gets a :class:`pillarbox.Job`. Returning is success;
    ``raise pillarbox.Retry(...)`` retries (optionally ``after`` a delay);
    ``raise pillarbox.Fatal(...)`` dead-letters at once; any other exception
    is a retryable failure whose kind is its class name (see ``retry_for``
    and ``fatal_for``).
    """

    @checked
    def __init__(
        self,
        broker: Any,
        topic: str,
        group: str,
        handler: Callable[..., Any],
        *,
        concurrency: int = _WORKER["concurrency"],
        prefetch: Optional[int] = None,
        retry: Optional[RetryPolicy] = None,
        handler_timeout: Optional[Seconds] = None,
        lease: Seconds = _WORKER["lease"],
        poll_wait: Seconds = _WORKER["poll_wait"],
        shutdown_grace: Seconds = _WORKER["shutdown_grace"],
        idempotency_store: Optional[str] = None,
        idempotency_retention: Seconds = _WORKER["idempotency_retention"],
        busy_key_delay: Seconds = _WORKER["busy_key_delay"],
        consumer_name: Optional[str] = None,
        retry_for: Optional[ExceptionTypes] = None,
        fatal_for: ExceptionTypes = (),
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        policy = retry or RetryPolicy()
        self._async = is_async(handler)
        self._native = _native.Worker(
            broker._native,
            topic,
            group,
            invoker(handler, Classifier(retry_for, fatal_for)),
            self._async,
            concurrency=concurrency,
            prefetch=prefetch,
            max_retries=policy.max_retries,
            initial_delay=seconds(policy.initial_delay, "initial_delay"),
            multiplier=policy.multiplier,
            max_delay=seconds(policy.max_delay, "max_delay"),
            jitter=policy.jitter,
            handler_timeout=seconds(handler_timeout, "handler_timeout"),
            lease=seconds(lease, "lease"),
            poll_wait=seconds(poll_wait, "poll_wait"),
            shutdown_grace=seconds(shutdown_grace, "shutdown_grace"),
            idempotency_store=idempotency_store,
            idempotency_retention=seconds(idempotency_retention, "idempotency_retention"),
            busy_key_delay=seconds(busy_key_delay, "busy_key_delay"),
            consumer_name=consumer_name,
        )

    @property
    def consumer_name(self) -> str:
        """This consumer's name, as the broker knows it."""
        return self._native.consumer_name

    @property
    def stats(self) -> _native.WorkerStats:
        """What the worker has done so far: received, succeeded, retried, dead-lettered..."""
        return self._native.stats()

    def shutdown(self) -> None:
        """Starts a graceful shutdown: no new messages; running handlers get
        ``shutdown_grace`` to finish, then are cancelled and their messages
        handed back. :meth:`run` returns when it is done."""
        self._native.shutdown()

    def run(self) -> None:
        """Runs until :meth:`shutdown`, SIGTERM or Ctrl-C (a second Ctrl-C
        stops at once), then shuts down gracefully. Blocks; the GIL is free
        for other threads meanwhile. Async handlers run on an event loop of
        the worker's own."""
        with _stop_on_signals(self), _event_loop(self._async) as loop:
            self._native.run(loop)

    async def run_async(self) -> None:
        """Runs as :meth:`run` does, on the running event loop (async handlers
        run on it), until :meth:`shutdown` is called."""
        from ._calls import wait

        try:
            await wait(self._native.run_async(asyncio.get_running_loop()))
        finally:
            self._native.detach_loop()

    def __repr__(self) -> str:
        return f"<pillarbox.Worker {self.consumer_name}>"


class _Stoppable(Protocol):
    def shutdown(self) -> None: ...


class _stop_on_signals:
    """In the main thread: SIGTERM and the first Ctrl-C shut the worker down
    gracefully; a second Ctrl-C raises ``KeyboardInterrupt``, which stops it
    at once (what it held returns to the broker after its lease)."""

    def __init__(self, worker: _Stoppable) -> None:
        self.worker = worker
        self.previous: Dict[int, Any] = {}
        self.stopping = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stopping and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stopping = True
        log.info("%s received: shutting down gracefully", signal.Signals(signum).name)
        self.worker.shutdown()

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class _event_loop:
    """An event loop on a thread of its own for async handlers (none for plain ones)."""

    def __init__(self, wanted: bool) -> None:
        self.loop: Optional[asyncio.AbstractEventLoop] = asyncio.new_event_loop() if wanted else None
        self.thread: Optional[threading.Thread] = None

    def __enter__(self) -> Optional[asyncio.AbstractEventLoop]:
        if self.loop is not None:
            self.thread = threading.Thread(target=self.loop.run_forever, name="pillarbox-handlers", daemon=True)
            self.thread.start()
        return self.loop

    def __exit__(self, *exc: object) -> None:
        if self.loop is None or self.thread is None:
            return

        async def unwind() -> None:
            # Handlers the worker gave up on (end of the shutdown grace) are
            # cancelled; their cancellation may not have reached the loop yet.
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in left:
                task.cancel()
            if left:
                await asyncio.wait(left, timeout=5)

        asyncio.run_coroutine_threadsafe(unwind(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

