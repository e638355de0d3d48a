"""Durations: the API takes seconds (int or float) or a ``timedelta``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional, Union

Duration = Union[int, float, timedelta]


def seconds(value: Optional[Duration], name: str) -> Optional[float]:
    """``value`` in seconds, or ``None``; :class:`pillarbox.InvalidOption`
    naming ``name`` for anything else (a negative, NaN or infinite number, a
    string...), as the native layer words it."""
    from .errors import invalid_option

    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    allowed = "must be a non-negative, finite number of seconds or a timedelta"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid_option(name, f"{allowed}, not {type(value).__name__} {value!r:.40}")
    if not 0 <= value < float("inf"):
        raise invalid_option(name, f"{allowed}, not {value}")
    return float(value)


def utc(epoch: Optional[float]) -> Optional[datetime]:
    """Seconds since the epoch as an aware UTC datetime."""
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=timezone.utc)
