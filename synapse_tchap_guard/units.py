"""Durations and sizes, read and written as Synapse's own config reads them.

A leaf: the config parser, the messages clients read and the SIEM events all speak
these units, and none of them needs the rest of the config to do so.
"""

from __future__ import annotations

import re

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
GIB = 1024**3

# The units Synapse's own config accepts (synapse.config._base.Config).
DURATION_UNITS = {
    "s": SECOND_MS,
    "m": MINUTE_MS,
    "h": HOUR_MS,
    "d": DAY_MS,
    "w": 7 * DAY_MS,
    "y": 365 * DAY_MS,
}
SIZE_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

DURATION_HELP = "use a number of milliseconds or 30s, 10m, 1h, 1d, 1w, 1y"
SIZE_HELP = "use a number of bytes or 500K, 20M, 2G, 1T"
# Longer is surely a typo, and would not fit the timestamps the guard stores.
MAX_DURATION_MS = 100 * 365 * DAY_MS

_DURATION = re.compile(r"\s*([0-9]+)\s*([smhdwy]?)\s*")
_SIZE = re.compile(r"\s*([0-9]+)\s*([KMGT]?)\s*")


class UnitError(ValueError):
    """A value that is not a duration or a size; its text says what is accepted."""


def parse_duration(value: object) -> int:
    """Milliseconds from `30s`, `10m`, `1h`, `1d`... or a bare number of ms, as Synapse.

    Raises `UnitError` saying what is wrong (the caller names the key)."""
    ms = None
    if type(value) is int and value >= 0:
        ms = value
    elif isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            number, unit = match.groups()
            if _too_many_digits(number):
                raise UnitError("is too long (at most 100y)")
            ms = int(number) * (DURATION_UNITS[unit] if unit else 1)
    if ms is None:
        raise UnitError(f"is not a duration ({DURATION_HELP})")
    if ms > MAX_DURATION_MS:
        raise UnitError("is too long (at most 100y)")
    return ms


def parse_size(value: object) -> int:
    """Bytes from `500K`, `20M`, `2G`, `1T` or a bare number of bytes, as Synapse."""
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match:
            number, unit = match.groups()
            if _too_many_digits(number):
                raise UnitError("is too large")
            return int(number) * (SIZE_UNITS[unit] if unit else 1)
    raise UnitError(f"is not a size ({SIZE_HELP})")


def _too_many_digits(number: str) -> bool:
    """More digits than any sensible value has (Python refuses to convert more than
    4300 of them, and no duration or size needs 19)."""
    return len(number.lstrip("0")) > 18


def format_duration(ms: int) -> str:
    """The shortest exact spelling of a duration, as an admin would write it."""
    if ms == 0:
        return "0"
    for unit in ("y", "w", "d", "h", "m", "s"):
        size = DURATION_UNITS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def format_size(size: int) -> str:
    """The shortest exact spelling of a size, as an admin would write it."""
    for unit in ("T", "G", "M", "K"):
        factor = SIZE_UNITS[unit]
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)
