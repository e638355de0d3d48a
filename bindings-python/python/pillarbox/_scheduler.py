"""The scheduler: publishes the ticks of the broker's schedules.

Run as many as you like (in every worker process, say): each tick is
published once, claimed in the broker's shared store before it is sent.
"""

from __future__ import annotations

from typing import Any

from . import _native
from ._worker import _stop_on_signals


class Scheduler:
    """Publishes each due tick of the schedules ``broker`` keeps
    (:meth:`pillarbox.Broker.upsert_schedule`), once however many run."""

    def __init__(self, broker: Any) -> None:
        self._native = _native.Scheduler(broker._native)

    def shutdown(self) -> None:
        """Stops :meth:`run` after the pass in progress."""
        self._native.shutdown()

    def run(self) -> None:
        """Runs until :meth:`shutdown`, SIGTERM or Ctrl-C. Blocks; the GIL is
        free for other threads meanwhile."""
        with _stop_on_signals(self):
            self._native.run()

    async def run_async(self) -> None:
        """Runs as :meth:`run` does, on the running event loop, until :meth:`shutdown`."""
        from ._calls import wait

        await wait(self._native.run_async())

    def __repr__(self) -> str:
        return "<pillarbox.Scheduler>"


__all__ = ["Scheduler"]
