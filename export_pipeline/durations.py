"""Durations as people read them, in logs, metadata texts and the run summary.

`str(timedelta)` prints `0:10:19.767000`; every message of the project
that states a duration uses `readable` instead.
"""

from __future__ import annotations

from datetime import timedelta


def readable(duration: float | timedelta) -> str:
    """`0.4 s`, `12.3 s`, `10 min 19 s`, `2 h 05 min`, `3 d 04 h` (seconds or a timedelta)."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    if seconds < 59.95:
        return f"{sign}{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{sign}{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{sign}{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{sign}{days} d {hours:02d} h"
