"""Durations: the API takes seconds (int or float) or a ``timedelta``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Optional, Union

Duration = Union[int, float, timedelta]


def seconds(value: Optional[Duration], name: str) -> Optional[float]:
    """``value`` in seconds, or ``None``; a clear error for anything else."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be seconds (int or float) or a timedelta, not {type(value).__name__}")
    if value < 0 or value != value:
        raise ValueError(f"{name} must not be negative, got {value}")
    return float(value)


def utc(epoch: Optional[float]) -> Optional[datetime]:
    """Seconds since the epoch as an aware UTC datetime."""
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=timezone.utc)
