"""Called by the native module on an event loop's thread to settle an
asyncio future with an operation's result (unless it was cancelled)."""

from __future__ import annotations

import asyncio
from typing import Any, Optional


def settle(future: "asyncio.Future[Any]", value: Any, error: Optional[BaseException]) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
