"""The guard's configuration: frozen attrs classes built by one parser.

Every key has a safe default, so `config: {}` works. Every mistake raises a
`ConfigError` that names the key and says what is accepted, so Synapse refuses to
start with a message an admin can act on.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attr
from synapse.module_api.errors import ConfigError

from synapse_tchap_guard.inputs import quoted
from synapse_tchap_guard.policy import Counting, Limit, Quota, StepUp, Threshold

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

# The units Synapse's own config accepts (synapse.config._base.Config).
_DURATION_UNITS = {
    "s": SECOND_MS,
    "m": MINUTE_MS,
    "h": HOUR_MS,
    "d": DAY_MS,
    "w": 7 * DAY_MS,
    "y": 365 * DAY_MS,
}
_SIZE_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_USER_ID = re.compile(r"^@[^:\s]+:[^\s]+$")
MAX_USER_ID = 255

DURATION_HELP = "use a number of milliseconds or 30s, 10m, 1h, 1d, 1w, 1y"
# Longer is surely a typo, and would not fit the timestamps the guard stores.
MAX_DURATION_MS = 100 * 365 * DAY_MS
SIZE_HELP = "use a number of bytes or 500K, 20M, 2G, 1T"


class Mode(enum.Enum):
    """`monitor` counts and reports what `enforce` would do, and denies nothing."""

    ENFORCE = "enforce"
    MONITOR = "monitor"


class OnError(enum.Enum):
    """What a gated request gets when the guard's database cannot answer."""

    ALLOW = "allow"
    DENY = "deny"


@attr.frozen
class BlockingConfig:
    duration_ms: int = DAY_MS  # 0: until an admin lifts the block
    end_sessions: bool = True


GIB = 1024**3

DEFAULT_PUBLIC_ROOM_JOINS = Quota(
    limits=(Limit(HOUR_MS, max=10), Limit(DAY_MS, max=30)),
    block_at=Threshold(DAY_MS, 60),
)
DEFAULT_MEDIA_DOWNLOADS = Quota(
    limits=(
        Limit(MINUTE_MS, max=120),
        Limit(HOUR_MS, max=1000, max_bytes=2 * GIB),
        Limit(DAY_MS, max=4000, max_bytes=10 * GIB),
    ),
    block_at=Threshold(HOUR_MS, 3000),
)


@attr.frozen
class DirectoryConfig:
    """The directory's budget (a quota whose limits a step-up lifts, and whose
    threshold counts refusals) and the threshold of failed step-ups."""

    quota: Quota
    failed_step_ups: Quota


DEFAULT_DIRECTORY = DirectoryConfig(
    quota=Quota(
        limits=(Limit(DAY_MS, max=300),),
        step_up=StepUp(12 * HOUR_MS, (Limit(DAY_MS, max=3000),)),
        block_at=Threshold(DAY_MS, 30, Counting.REFUSALS),
    ),
    failed_step_ups=Quota(block_at=Threshold(HOUR_MS, 5)),
)

_DEFAULT_DIRECTORY_OR_NONE: DirectoryConfig | None = DEFAULT_DIRECTORY


@attr.frozen
class GuardConfig:
    mode: Mode = Mode.ENFORCE
    exempt_users: frozenset[str] = frozenset()
    on_error: OnError = OnError.ALLOW
    public_room_joins: Quota = DEFAULT_PUBLIC_ROOM_JOINS
    media_downloads: Quota = DEFAULT_MEDIA_DOWNLOADS
    directory: DirectoryConfig | None = DEFAULT_DIRECTORY
    blocking: BlockingConfig = BlockingConfig()
    retention_ms: int = 90 * DAY_MS

    @property
    def enforcing(self) -> bool:
        return self.mode is Mode.ENFORCE


def parse_config(raw: Any) -> GuardConfig:
    """Build the guard's config from the module's `config:` mapping."""
    top = _Section(raw, ())
    config = GuardConfig(
        mode=top.choice("mode", Mode, Mode.ENFORCE),
        exempt_users=top.get("exempt_users", _parse_user_ids, frozenset()),
        on_error=top.choice("on_error", OnError, OnError.ALLOW),
        public_room_joins=top.get(
            "public_room_joins",
            _quota_parser(DEFAULT_PUBLIC_ROOM_JOINS),
            DEFAULT_PUBLIC_ROOM_JOINS,
        ),
        media_downloads=top.get(
            "media_downloads",
            _quota_parser(DEFAULT_MEDIA_DOWNLOADS, allow_bytes=True),
            DEFAULT_MEDIA_DOWNLOADS,
        ),
        directory=top.get("directory", _parse_directory, _DEFAULT_DIRECTORY_OR_NONE),
        blocking=top.get("blocking", _parse_blocking, BlockingConfig()),
        retention_ms=top.get("retention", _positive_duration, 90 * DAY_MS),
    )
    top.reject_unknown()
    return config


# --- durations and sizes ---------------------------------------------------------


def parse_duration(value: Any, path: tuple[str, ...]) -> int:
    """Milliseconds from `30s`, `10m`, `1h`, `1d`... or a bare number of ms, as Synapse."""
    ms = None
    if type(value) is int and value >= 0:
        ms = value
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]+)\s*([smhdwy]?)\s*", value)
        if match:
            number, unit = match.groups()
            if _too_many_digits(number):
                raise _error(path, f"{quoted(value)} is too long (at most 100y)")
            ms = int(number) * (_DURATION_UNITS[unit] if unit else 1)
    if ms is None:
        raise _error(path, f"{quoted(value)} is not a duration ({DURATION_HELP})")
    if ms > MAX_DURATION_MS:
        raise _error(path, f"{quoted(value)} is too long (at most 100y)")
    return ms


def parse_size(value: Any, path: tuple[str, ...]) -> int:
    """Bytes from `500K`, `20M`, `2G`, `1T` or a bare number of bytes, as Synapse."""
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]+)\s*([KMGT]?)\s*", value)
        if match:
            number, unit = match.groups()
            if _too_many_digits(number):
                raise _error(path, f"{quoted(value)} is too large")
            return int(number) * (_SIZE_UNITS[unit] if unit else 1)
    raise _error(path, f"{quoted(value)} is not a size ({SIZE_HELP})")


def _too_many_digits(number: str) -> bool:
    """More digits than any sensible value has (Python refuses to convert more than
    4300 of them, and no duration or size needs 19)."""
    return len(number.lstrip("0")) > 18


def format_size(size: int) -> str:
    """The shortest exact spelling of a size, as an admin would write it."""
    for unit in ("T", "G", "M", "K"):
        factor = _SIZE_UNITS[unit]
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def is_user_id(value: Any) -> bool:
    """Shaped like `@localpart:server`, printable, at most 255 characters as the spec
    wants (Synapse checks the rest where it matters)."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_USER_ID
        and value.isprintable()
        and _USER_ID.match(value) is not None
    )


def format_duration(ms: int) -> str:
    """The shortest exact spelling of a duration, as an admin would write it."""
    if ms == 0:
        return "0"
    for unit in ("y", "w", "d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


# --- sections ----------------------------------------------------------------------

T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)


class _Section:
    """A mapping being read, that remembers its path and which keys were used."""

    def __init__(self, raw: Any, path: tuple[str, ...]) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise _error(path, f"expected a mapping of keys, got {_kind(raw)}")
        self.raw = raw
        self.path = path
        self.used: set[str] = set()

    def get(
        self, key: str, parse: Callable[[Any, tuple[str, ...]], T], default: T
    ) -> T:
        self.used.add(key)
        if key not in self.raw:
            return default
        return parse(self.raw[key], (*self.path, key))

    def choice(self, key: str, kind: type[E], default: E) -> E:
        def parse(value: Any, path: tuple[str, ...]) -> E:
            for member in kind:
                if value == member.value:
                    return member
            accepted = " or ".join(repr(m.value) for m in kind)
            raise _error(path, f"{value!r} is not accepted (use {accepted})")

        return self.get(key, parse, default)

    def reject_unknown(self) -> None:
        for key in self.raw:
            if key not in self.used:
                accepted = ", ".join(sorted(self.used))
                raise _error(
                    (*self.path, str(key)),
                    f"unknown key {str(key)!r} (accepted here: {accepted})",
                )


def _quota_parser(
    default: Quota, allow_bytes: bool = False
) -> Callable[[Any, tuple[str, ...]], Quota]:
    """A parser for one control's `limits` and `block_at`; absent keys keep `default`."""

    def parse(raw: Any, path: tuple[str, ...]) -> Quota:
        section = _Section(raw, path)
        limits = section.get(
            "limits", lambda v, p: _parse_limits(v, p, allow_bytes), default.limits
        )
        block_at = section.get("block_at", _parse_threshold, default.block_at)
        section.reject_unknown()
        return Quota(limits=limits, block_at=block_at)

    return parse


def _parse_limits(
    raw: Any, path: tuple[str, ...], allow_bytes: bool
) -> tuple[Limit, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _error(
            path, f"expected a list like [{{window: 1h, max: 10}}], got {_kind(raw)}"
        )
    limits = []
    for index, item in enumerate(raw):
        section = _Section(item, (*path, str(index)))
        window = section.get("window", _positive_duration, None)
        count = section.get("max", _positive_int, None)
        size = section.get("max_bytes", _positive_size, None) if allow_bytes else None
        section.reject_unknown()
        if window is None:
            raise _error(section.path, "every limit needs a window (e.g. window: 1h)")
        if count is None and size is None:
            wanted = "max (or max_bytes)" if allow_bytes else "max"
            raise _error(section.path, f"every limit needs {wanted}, e.g. max: 10")
        limits.append(Limit(window_ms=window, max=count, max_bytes=size))
    return tuple(limits)


def _parse_threshold(raw: Any, path: tuple[str, ...]) -> Threshold | None:
    if raw is None:
        return None
    section = _Section(raw, path)
    window = section.get("window", _positive_duration, None)
    count = section.get("max", _positive_int, None)
    section.reject_unknown()
    if window is None or count is None:
        raise _error(
            path, "needs a window and a max, e.g. {window: 1d, max: 60}, or null"
        )
    return Threshold(window_ms=window, max=count)


def _parse_directory(raw: Any, path: tuple[str, ...]) -> DirectoryConfig | None:
    section = _Section(raw, path)
    default = DEFAULT_DIRECTORY.quota
    assert default.step_up is not None
    free = section.get("free", _parse_budget, None) or default.limits[0]
    after = (
        section.get("after_step_up", _parse_budget, None) or default.step_up.limits[0]
    )
    valid_for = section.get(
        "step_up_valid_for", _positive_duration, default.step_up.valid_for_ms
    )
    block_at = section.get("block_at", _parse_threshold, default.block_at)
    failed = section.get(
        "failed_step_ups_block_at",
        _parse_threshold,
        DEFAULT_DIRECTORY.failed_step_ups.block_at,
    )
    section.reject_unknown()
    if "free" in section.raw and section.raw["free"] is None:
        return None  # `free: null`: discovering the directory is not limited
    assert free.max is not None and after.max is not None
    if after.max < free.max:
        raise _error(
            (*path, "after_step_up", "max_profiles"),
            f"{after.max} is below free.max_profiles ({free.max}):"
            " a step-up must not lower the budget",
        )
    return DirectoryConfig(
        quota=Quota(
            limits=(free,),
            step_up=StepUp(valid_for, (after,)),
            block_at=attr.evolve(block_at, counts=Counting.REFUSALS)
            if block_at
            else None,
        ),
        failed_step_ups=Quota(block_at=failed),
    )


def _parse_budget(raw: Any, path: tuple[str, ...]) -> Limit | None:
    if raw is None:
        return None
    section = _Section(raw, path)
    window = section.get("window", _positive_duration, None)
    count = section.get("max_profiles", _positive_int, None)
    section.reject_unknown()
    if window is None or count is None:
        raise _error(
            path,
            "needs a window and max_profiles, e.g. {window: 1d, max_profiles: 300}",
        )
    return Limit(window_ms=window, max=count)


def _parse_blocking(raw: Any, path: tuple[str, ...]) -> BlockingConfig:
    section = _Section(raw, path)
    config = BlockingConfig(
        duration_ms=section.get("duration", parse_duration, DAY_MS),
        end_sessions=section.get("end_sessions", _parse_bool, True),
    )
    section.reject_unknown()
    return config


def _parse_user_ids(raw: Any, path: tuple[str, ...]) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list):
        raise _error(path, f"expected a list of user ids, got {_kind(raw)}")
    for index, user_id in enumerate(raw):
        if not is_user_id(user_id):
            raise _error(
                (*path, str(index)),
                f"{user_id!r} is not a user id (use the form @alice:example.org)",
            )
    return frozenset(raw)


def _positive_duration(raw: Any, path: tuple[str, ...]) -> int:
    value = parse_duration(raw, path)
    if value <= 0:
        raise _error(path, f"{raw!r} must be longer than zero ({DURATION_HELP})")
    return value


def _positive_size(raw: Any, path: tuple[str, ...]) -> int:
    value = parse_size(raw, path)
    if value <= 0:
        raise _error(path, f"{raw!r} must be more than zero bytes ({SIZE_HELP})")
    return value


def _positive_int(raw: Any, path: tuple[str, ...]) -> int:
    if type(raw) is int and raw > 0:
        return raw
    raise _error(path, f"{raw!r} is not a whole number above zero")


def _parse_bool(raw: Any, path: tuple[str, ...]) -> bool:
    if isinstance(raw, bool):
        return raw
    raise _error(path, f"{raw!r} is not accepted (use true or false)")


def _error(path: tuple[str, ...], message: str) -> ConfigError:
    where = ".".join(path) or "config"
    return ConfigError(f"{where}: {message}", path)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def describe(config: GuardConfig) -> dict[str, Any]:
    """The effective config, spelled as an admin would write it (for logs and events)."""
    return {
        "mode": config.mode.value,
        "exempt_users": sorted(config.exempt_users),
        "on_error": config.on_error.value,
        "public_room_joins": describe_quota(config.public_room_joins),
        "media_downloads": describe_quota(config.media_downloads),
        "directory": describe_directory(config.directory),
        "blocking": {
            "duration": format_duration(config.blocking.duration_ms),
            "end_sessions": config.blocking.end_sessions,
        },
        "retention": format_duration(config.retention_ms),
    }


def describe_directory(directory: DirectoryConfig | None) -> dict[str, Any] | None:
    if directory is None:
        return None
    quota = directory.quota
    assert quota.step_up is not None

    def budget(limit: Limit) -> dict[str, Any]:
        return {"window": format_duration(limit.window_ms), "max_profiles": limit.max}

    return {
        "free": budget(quota.limits[0]),
        "step_up_valid_for": format_duration(quota.step_up.valid_for_ms),
        "after_step_up": budget(quota.step_up.limits[0]),
        "block_at": _describe_threshold(quota.block_at),
        "failed_step_ups_block_at": _describe_threshold(
            directory.failed_step_ups.block_at
        ),
    }


def _describe_threshold(threshold: Threshold | None) -> dict[str, Any] | None:
    if threshold is None:
        return None
    return {"window": format_duration(threshold.window_ms), "max": threshold.max}


def describe_quota(quota: Quota) -> dict[str, Any]:
    limits = []
    for limit in quota.limits:
        described: dict[str, Any] = {"window": format_duration(limit.window_ms)}
        if limit.max is not None:
            described["max"] = limit.max
        if limit.max_bytes is not None:
            described["max_bytes"] = format_size(limit.max_bytes)
        limits.append(described)
    return {"limits": limits, "block_at": _describe_threshold(quota.block_at)}
