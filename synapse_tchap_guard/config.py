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
from synapse_tchap_guard.step_up_methods import DEFAULT_METHODS, Method

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
# Shorter is surely milliseconds meant as seconds (a bare number is milliseconds).
MIN_WINDOW_MS = SECOND_MS
# Above these, a maximum is surely a typo (and would overflow nothing, but mean nothing).
MAX_COUNT = 10**9
MAX_BYTES = 1024**5  # 1024T
# More requests a second than one Synapse process serves (see the README's Speed):
# a block threshold that needs more can never be reached.
MAX_REACHABLE_PER_SECOND = 1000


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


# Codes mailed to one account, and notices sent to one owner on one channel.
DEFAULT_MAX_CODES_SENT = Threshold(HOUR_MS, 5)
DEFAULT_NOTICES_LIMIT = Threshold(HOUR_MS, 3)


@attr.frozen
class EmailCodeConfig:
    """One-time codes mailed to the account's verified addresses."""

    valid_for_ms: int = 10 * MINUTE_MS
    max_tries: int = 3  # wrong entries of one code before it is void
    max_sent: Threshold = DEFAULT_MAX_CODES_SENT


@attr.frozen
class SmallThumbnails:
    """Thumbnails at most `max_size` pixels wide and high: the avatars a client loads
    by the hundred. They have a quota of their own (refusing one makes Element fetch
    the full picture instead); larger thumbnails count as downloads."""

    max_size: int
    quota: Quota


DEFAULT_SMALL_THUMBNAILS = SmallThumbnails(
    max_size=400,
    quota=Quota(
        limits=(
            Limit(MINUTE_MS, max=1000),
            Limit(HOUR_MS, max=5000),
            Limit(DAY_MS, max=20000),
        ),
        block_at=Threshold(HOUR_MS, 10000),
    ),
)

# Element loads a room's history 50 messages a page, several pages to fill a screen;
# the June 2026 attack read 643,000.
DEFAULT_MESSAGE_HISTORY = Quota(
    limits=(Limit(HOUR_MS, max=5000), Limit(DAY_MS, max=20000)),
    # Requests refused (each room once: a client retrying the same room never
    # blocks its owner) that block the account.
    block_at=Threshold(HOUR_MS, 30, Counting.REFUSALS),
    max_per_request=1000,  # Synapse's own cap on `/messages`
)


@attr.frozen
class DirectoryConfig:
    """The people budget (a quota whose limits a step-up lifts, and whose threshold
    counts refusals), how much a directory search may show, how an account may step
    up, and the threshold of failed step-ups."""

    quota: Quota
    failed_step_ups: Quota
    # A search shows people not discovered yet only from this many characters on,
    min_search_length: int = 3
    # and at most this many of them at once (a type-ahead shows its best matches).
    new_people_per_search: int = 20
    methods: tuple[Method, ...] = DEFAULT_METHODS
    email_code: EmailCodeConfig = EmailCodeConfig()


DEFAULT_DIRECTORY = DirectoryConfig(
    quota=Quota(
        limits=(Limit(DAY_MS, max=3000),),
        step_up=StepUp(12 * HOUR_MS, (Limit(DAY_MS, max=20000),)),
        block_at=Threshold(DAY_MS, 30, Counting.REFUSALS),
    ),
    failed_step_ups=Quota(block_at=Threshold(HOUR_MS, 5)),
)


@attr.frozen
class OwnerNoticesConfig:
    """Telling an account's owner that it was blocked, or stepped up: where, and how
    often at most (per account and channel), so notices cannot flood an inbox."""

    email: bool = True
    server_notice: bool = True
    limit: Threshold = DEFAULT_NOTICES_LIMIT


_DEFAULT_NOTICES_OR_NONE: OwnerNoticesConfig | None = OwnerNoticesConfig()

_DEFAULT_DIRECTORY_OR_NONE: DirectoryConfig | None = DEFAULT_DIRECTORY


@attr.frozen
class GuardConfig:
    mode: Mode = Mode.ENFORCE
    exempt_users: frozenset[str] = frozenset()
    on_error: OnError = OnError.ALLOW
    public_room_joins: Quota = DEFAULT_PUBLIC_ROOM_JOINS
    media_downloads: Quota = DEFAULT_MEDIA_DOWNLOADS
    message_history: Quota = DEFAULT_MESSAGE_HISTORY
    small_thumbnails: SmallThumbnails = DEFAULT_SMALL_THUMBNAILS
    directory: DirectoryConfig | None = DEFAULT_DIRECTORY
    blocking: BlockingConfig = BlockingConfig()
    owner_notices: OwnerNoticesConfig | None = OwnerNoticesConfig()
    retention_ms: int = 90 * DAY_MS

    @property
    def enforcing(self) -> bool:
        return self.mode is Mode.ENFORCE


def parse_config(raw: Any) -> GuardConfig:
    """Build the guard's config from the module's `config:` mapping.

    An absent key keeps its default. `null` turns off what it names (a control, its
    limits, its block threshold, a limit's `max` or `max_bytes`), and is refused,
    with the key named, where nothing can be turned off.
    """
    top = _Section(raw, ())
    config = GuardConfig(
        mode=top.choice("mode", Mode, Mode.ENFORCE),
        exempt_users=top.get(
            "exempt_users", _parse_user_ids, frozenset(), off=frozenset()
        ),
        on_error=top.choice("on_error", OnError, OnError.ALLOW),
        public_room_joins=top.get(
            "public_room_joins",
            _quota_parser(DEFAULT_PUBLIC_ROOM_JOINS),
            DEFAULT_PUBLIC_ROOM_JOINS,
            off=Quota(),
        ),
        media_downloads=top.get(
            "media_downloads",
            _quota_parser(DEFAULT_MEDIA_DOWNLOADS, allow_bytes=True),
            DEFAULT_MEDIA_DOWNLOADS,
            off=Quota(),
        ),
        directory=top.get(
            "directory", _parse_directory, _DEFAULT_DIRECTORY_OR_NONE, off=None
        ),
        blocking=top.get(
            "blocking",
            _parse_blocking,
            BlockingConfig(),
            off=_NotOff("to never block, set block_at: null in each control"),
        ),
        message_history=top.get(
            "message_history",
            _quota_parser(DEFAULT_MESSAGE_HISTORY),
            DEFAULT_MESSAGE_HISTORY,
            off=Quota(),
        ),
        # null: no thumbnail has a quota of its own, all count as downloads.
        small_thumbnails=top.get(
            "small_thumbnails",
            _parse_small_thumbnails,
            DEFAULT_SMALL_THUMBNAILS,
            off=SmallThumbnails(0, Quota()),
        ),
        owner_notices=top.get(
            "owner_notices", _parse_owner_notices, _DEFAULT_NOTICES_OR_NONE, off=None
        ),
        retention_ms=top.get("retention", _positive_duration, 90 * DAY_MS),
    )
    top.reject_unknown()
    _check_retention(config, "retention" in top.raw)
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


@attr.frozen
class _NotOff:
    """A key that cannot be turned off: null is refused, saying why."""

    why: str = "it has no off; leave it out for the default"


NOT_OFF = _NotOff()


class _Section:
    """A mapping being read, that remembers its path and which keys were used."""

    def __init__(self, raw: Any, path: tuple[str, ...]) -> None:
        if raw is None and not path:
            raw = {}  # `config:` left empty: the defaults
        if not isinstance(raw, Mapping):
            raise _error(path, f"expected a mapping of keys, got {_kind(raw)}")
        self.raw = raw
        self.path = path
        self.used: set[str] = set()

    def get(
        self,
        key: str,
        parse: Callable[[Any, tuple[str, ...]], T],
        default: T,
        off: T | _NotOff = NOT_OFF,
    ) -> T:
        """The key's value parsed, `default` if absent, and `off` if null (null is
        refused where nothing can be turned off)."""
        self.used.add(key)
        if key not in self.raw:
            return default
        path = (*self.path, key)
        if self.raw[key] is None:
            if isinstance(off, _NotOff):
                raise _error(path, f"cannot be null ({off.why})")
            return off
        return parse(self.raw[key], path)

    def choice(self, key: str, kind: type[E], default: E) -> E:
        def parse(value: Any, path: tuple[str, ...]) -> E:
            for member in kind:
                if value == member.value:
                    return member
            accepted = " or ".join(repr(m.value) for m in kind)
            raise _error(path, f"{quoted(value)} is not accepted (use {accepted})")

        return self.get(key, parse, default)

    def reject_unknown(self) -> None:
        for key in self.raw:
            if key not in self.used:
                accepted = ", ".join(sorted(self.used))
                raise _error(
                    (*self.path, str(key)),
                    f"unknown key {quoted(str(key))} (accepted here: {accepted})",
                )


def _quota_parser(
    default: Quota, allow_bytes: bool = False
) -> Callable[[Any, tuple[str, ...]], Quota]:
    """A parser for one control's `limits` and `block_at` (and `max_per_request`, for
    a control whose default has one); absent keys keep `default`."""

    def parse(raw: Any, path: tuple[str, ...]) -> Quota:
        section = _Section(raw, path)
        quota = _read_quota(section, default, allow_bytes)
        section.reject_unknown()
        return quota

    return parse


def _read_quota(section: _Section, default: Quota, allow_bytes: bool = False) -> Quota:
    """A control's `limits` and `block_at` (and `max_per_request`, if its default has
    one), with the checks that make them mean something."""
    path = section.path
    limits = section.get(
        "limits",
        lambda v, p: _parse_limits(v, p, allow_bytes),
        default.limits,
        off=(),
    )
    block_at = section.get("block_at", _parse_threshold, default.block_at, off=None)
    max_per_request = default.max_per_request
    if default.max_per_request is not None:
        max_per_request = section.get(
            "max_per_request", _maximum, default.max_per_request, off=None
        )
    if block_at is not None:
        given = "block_at" in section.raw
        _check_reachable(block_at, (*path, "block_at"), given)
        if default.block_at is not None:  # it counts what the default counts
            block_at = attr.evolve(block_at, counts=default.block_at.counts)
        if block_at.counts is Counting.ATTEMPTS:
            _check_above_limits(block_at, limits, (*path, "block_at"), given)
    return Quota(limits=limits, block_at=block_at, max_per_request=max_per_request)


def _parse_limits(
    raw: Any, path: tuple[str, ...], allow_bytes: bool
) -> tuple[Limit, ...]:
    if not isinstance(raw, list):
        raise _error(
            path, f"expected a list like [{{window: 1h, max: 10}}], got {_kind(raw)}"
        )
    limits = []
    for index, item in enumerate(raw):
        section = _Section(item, (*path, str(index)))
        window = section.get("window", _window, None)
        count = section.get("max", _maximum, None, off=None)
        size = (
            section.get("max_bytes", _maximum_size, None, off=None)
            if allow_bytes
            else None
        )
        section.reject_unknown()
        if window is None:
            raise _error(section.path, "every limit needs a window (e.g. window: 1h)")
        if count is None and size is None:
            wanted = "max (or max_bytes)" if allow_bytes else "max"
            raise _error(section.path, f"every limit needs {wanted}, e.g. max: 10")
        limits.append(Limit(window_ms=window, max=count, max_bytes=size))
    return tuple(limits)


def _parse_threshold(raw: Any, path: tuple[str, ...]) -> Threshold:
    section = _Section(raw, path)
    window = section.get("window", _window, None)
    count = section.get("max", _maximum, None)
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
    no_off = _NotOff("a step-up needs a budget; `directory: null` lifts them all")
    free = section.get("free", _parse_budget, default.limits[0], off=None)
    after = section.get(
        "after_step_up", _parse_budget, default.step_up.limits[0], off=no_off
    )
    valid_for = section.get(
        "step_up_valid_for",
        _positive_duration,
        default.step_up.valid_for_ms,
        off=no_off,
    )
    methods = section.get("step_up_methods", _parse_methods, DEFAULT_METHODS)
    email_code = section.get("email_code", _parse_email_code, EmailCodeConfig())
    block_at = section.get("block_at", _parse_threshold, default.block_at, off=None)
    failed = section.get(
        "failed_step_ups_block_at",
        _parse_threshold,
        DEFAULT_DIRECTORY.failed_step_ups.block_at,
        off=None,
    )
    min_length = section.get(
        "min_search_length", _maximum, DEFAULT_DIRECTORY.min_search_length
    )
    per_search = section.get(
        "new_people_per_search", _maximum, DEFAULT_DIRECTORY.new_people_per_search
    )
    section.reject_unknown()
    for key, threshold in (
        ("block_at", block_at),
        ("failed_step_ups_block_at", failed),
    ):
        if threshold is not None:
            _check_reachable(threshold, (*path, key), key in section.raw)
    if free is None:
        return None  # `free: null`: discovering the directory is not limited
    _check_step_up_budget(free, after, path)
    return DirectoryConfig(
        quota=Quota(
            limits=(free,),
            step_up=StepUp(valid_for, (after,)),
            block_at=attr.evolve(block_at, counts=Counting.REFUSALS)
            if block_at
            else None,
        ),
        failed_step_ups=Quota(block_at=failed),
        min_search_length=min_length,
        new_people_per_search=per_search,
        methods=methods,
        email_code=email_code,
    )


def _parse_methods(raw: Any, path: tuple[str, ...]) -> tuple[Method, ...]:
    accepted = ", ".join(method.value for method in Method)
    if not isinstance(raw, list) or not raw:
        raise _error(
            path,
            f"expected a list of one or more of {accepted}, got {raw!r}"
            " (to never lift the budget, set after_step_up to the free budget)",
        )
    methods: list[Method] = []
    for index, name in enumerate(raw):
        method = next((m for m in Method if m.value == name), None)
        if method is None:
            raise _error(
                (*path, str(index)), f"{name!r} is not a method (use {accepted})"
            )
        if method in methods:
            raise _error((*path, str(index)), f"{name!r} is listed twice")
        methods.append(method)
    return tuple(methods)


def _parse_email_code(raw: Any, path: tuple[str, ...]) -> EmailCodeConfig:
    section = _Section(raw, path)
    default = EmailCodeConfig()
    config = EmailCodeConfig(
        valid_for_ms=section.get("valid_for", _positive_duration, default.valid_for_ms),
        max_tries=section.get("max_tries", _maximum, default.max_tries),
        max_sent=section.get("max_sent", _parse_threshold, default.max_sent),
    )
    section.reject_unknown()
    return config


def _parse_owner_notices(raw: Any, path: tuple[str, ...]) -> OwnerNoticesConfig:
    section = _Section(raw, path)
    default = OwnerNoticesConfig()
    config = OwnerNoticesConfig(
        email=section.get("email", _parse_bool, default.email),
        server_notice=section.get("server_notice", _parse_bool, default.server_notice),
        limit=section.get("limit", _parse_threshold, default.limit),
    )
    section.reject_unknown()
    return config


def _parse_budget(raw: Any, path: tuple[str, ...]) -> Limit:
    section = _Section(raw, path)
    window = section.get("window", _window, None)
    count = section.get("max_profiles", _maximum, None)
    section.reject_unknown()
    if window is None or count is None:
        raise _error(
            path,
            "needs a window and max_profiles, e.g. {window: 1d, max_profiles: 300}",
        )
    return Limit(window_ms=window, max=count)


def _parse_small_thumbnails(raw: Any, path: tuple[str, ...]) -> SmallThumbnails:
    section = _Section(raw, path)
    default = DEFAULT_SMALL_THUMBNAILS
    max_size = section.get("max_size", _maximum, default.max_size)
    quota = _read_quota(section, default.quota)
    section.reject_unknown()
    return SmallThumbnails(max_size, quota)


def _parse_blocking(raw: Any, path: tuple[str, ...]) -> BlockingConfig:
    section = _Section(raw, path)
    config = BlockingConfig(
        duration_ms=section.get("duration", parse_duration, DAY_MS),
        end_sessions=section.get("end_sessions", _parse_bool, True),
    )
    section.reject_unknown()
    return config


def _parse_user_ids(raw: Any, path: tuple[str, ...]) -> frozenset[str]:
    if not isinstance(raw, list):
        raise _error(path, f"expected a list of user ids, got {_kind(raw)}")
    for index, user_id in enumerate(raw):
        if not is_user_id(user_id):
            raise _error(
                (*path, str(index)),
                f"{quoted(user_id)} is not a user id (use the form @alice:example.org)",
            )
    return frozenset(raw)


def _positive_duration(raw: Any, path: tuple[str, ...]) -> int:
    value = parse_duration(raw, path)
    if value <= 0:
        raise _error(path, f"{quoted(raw)} must be longer than zero ({DURATION_HELP})")
    return value


def _window(raw: Any, path: tuple[str, ...]) -> int:
    value = _positive_duration(raw, path)
    if value < MIN_WINDOW_MS:
        raise _error(
            path,
            f"{quoted(raw)} is under a second: a bare number is milliseconds"
            " (write 30s, 10m, 1h)",
        )
    return value


def _maximum_size(raw: Any, path: tuple[str, ...]) -> int:
    value = parse_size(raw, path)
    if value <= 0:
        raise _error(path, f"{quoted(raw)} must be more than zero bytes ({SIZE_HELP})")
    if value > MAX_BYTES:
        raise _error(path, f"{quoted(raw)} is more than {format_size(MAX_BYTES)}")
    return value


def _maximum(raw: Any, path: tuple[str, ...]) -> int:
    if type(raw) is not int or raw <= 0:
        raise _error(path, f"{quoted(raw)} is not a whole number above zero")
    if raw > MAX_COUNT:
        raise _error(path, f"{quoted(raw)} is more than {MAX_COUNT:,}: surely a typo")
    return raw


def _parse_bool(raw: Any, path: tuple[str, ...]) -> bool:
    if isinstance(raw, bool):
        return raw
    raise _error(path, f"{quoted(raw)} is not accepted (use true or false)")


# --- combinations ------------------------------------------------------------------


def _check_reachable(threshold: Threshold, path: tuple[str, ...], given: bool) -> None:
    """A threshold that needs more requests a second than a Synapse process serves
    can never block anyone."""
    per_second = threshold.max * SECOND_MS / threshold.window_ms
    if per_second > MAX_REACHABLE_PER_SECOND:
        raise _error(
            path,
            f"{_threshold_text(threshold, given)} would take {per_second:,.0f}"
            f" requests a second from one account, more than a Synapse process"
            f" serves ({MAX_REACHABLE_PER_SECOND:,}): it can never be reached."
            " Use a longer window or a lower max",
        )


def _check_above_limits(
    threshold: Threshold, limits: tuple[Limit, ...], path: tuple[str, ...], given: bool
) -> None:
    """A threshold counting attempts must lie beyond what the limits serve in its
    window; at or below it, it blocks an account the limits never refused."""
    bound = _served_at_most(limits, threshold.window_ms)
    if bound is None:
        return  # no limit counts requests: blocking is the only rule
    most, index = bound
    if threshold.max <= most:
        window = format_duration(threshold.window_ms)
        raise _error(
            path,
            f"{_threshold_text(threshold, given)} is at or below what the limits"
            f" serve in {window} ({most}, by limits.{index}): it would block an"
            f" account that was never refused. Set max above {most}",
        )


def _served_at_most(
    limits: tuple[Limit, ...], window_ms: int
) -> tuple[int, int] | None:
    """The most requests the limits serve one account in any `window_ms`, and the
    index of the limit that bounds it (None if no limit counts requests). A limit of
    `max` per window serves at most `max` in each of the windows the span covers."""
    bound = None
    for index, limit in enumerate(limits):
        if limit.max is None:
            continue
        most = limit.max * -(-window_ms // limit.window_ms)
        if bound is None or most < bound[0]:
            bound = (most, index)
    return bound


def _check_step_up_budget(free: Limit, after: Limit, path: tuple[str, ...]) -> None:
    """A step-up lifts the budget: a shorter window would make it a different rate,
    and a lower max would lower it."""
    assert free.max is not None and after.max is not None
    if after.window_ms < free.window_ms:
        raise _error(
            (*path, "after_step_up", "window"),
            f"{format_duration(after.window_ms)} is shorter than free.window"
            f" ({format_duration(free.window_ms)}): a step-up lifts the budget of"
            " the same window. Use a window of at least"
            f" {format_duration(free.window_ms)}",
        )
    if after.max < free.max:
        raise _error(
            (*path, "after_step_up", "max_profiles"),
            f"{after.max} is below free.max_profiles ({free.max}):"
            " a step-up must not lower the budget",
        )


def _check_retention(config: GuardConfig, given: bool) -> None:
    """The audit trail explains the counts: it must outlive the longest window."""
    windows = [
        (config.public_room_joins.longest_window_ms, "public_room_joins"),
        (config.media_downloads.longest_window_ms, "media_downloads"),
    ]
    if config.directory is not None:
        windows += [
            (config.directory.quota.longest_window_ms, "directory"),
            (config.directory.failed_step_ups.longest_window_ms, "directory"),
        ]
    longest, control = max(windows)
    if config.retention_ms < longest:
        default = "" if given else " (the default)"
        raise _error(
            ("retention",),
            f"{format_duration(config.retention_ms)}{default} is shorter than the"
            f" longest window counted ({format_duration(longest)}, in {control}):"
            " the audit trail would be gone before the counts it explains. Use at"
            f" least {format_duration(longest)}",
        )


def _threshold_text(threshold: Threshold, given: bool) -> str:
    window = format_duration(threshold.window_ms)
    default = "" if given else " (the default)"
    return f"max {threshold.max} in {window}{default}"


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
        "message_history": describe_quota(config.message_history),
        "small_thumbnails": {
            "max_size": config.small_thumbnails.max_size,
            **describe_quota(config.small_thumbnails.quota),
        },
        "directory": describe_directory(config.directory),
        "blocking": {
            "duration": format_duration(config.blocking.duration_ms),
            "end_sessions": config.blocking.end_sessions,
        },
        "owner_notices": describe_owner_notices(config.owner_notices),
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
        "step_up_methods": [method.value for method in directory.methods],
        "email_code": {
            "valid_for": format_duration(directory.email_code.valid_for_ms),
            "max_tries": directory.email_code.max_tries,
            "max_sent": _describe_threshold(directory.email_code.max_sent),
        },
        "block_at": _describe_threshold(quota.block_at),
        "failed_step_ups_block_at": _describe_threshold(
            directory.failed_step_ups.block_at
        ),
        "min_search_length": directory.min_search_length,
        "new_people_per_search": directory.new_people_per_search,
    }


def describe_owner_notices(
    notices: OwnerNoticesConfig | None,
) -> dict[str, Any] | None:
    if notices is None:
        return None
    return {
        "email": notices.email,
        "server_notice": notices.server_notice,
        "limit": _describe_threshold(notices.limit),
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
    description: dict[str, Any] = {
        "limits": limits,
        "block_at": _describe_threshold(quota.block_at),
    }
    if quota.max_per_request is not None:
        description["max_per_request"] = quota.max_per_request
    return description
