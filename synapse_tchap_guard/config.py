"""The guard's configuration: frozen attrs classes built by one parser.

Every key has a safe default, so `config: {}` works. Every mistake raises a
`ConfigError` that names the key and says what is accepted, so Synapse refuses to
start with a message an admin can act on.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import attr
from synapse.module_api.errors import ConfigError

from synapse_tchap_guard import units
from synapse_tchap_guard.controls import (
    CONTROLS,
    DIRECTORY,
    FAILED_STEP_UPS,
    SMALL_THUMBNAILS,
    ControlSpec,
    default_quotas,
)
from synapse_tchap_guard.inputs import quoted
from synapse_tchap_guard.policy import Counting, Limit, Quota, StepUp, Threshold
from synapse_tchap_guard.step_up_methods import DEFAULT_METHODS, Method
from synapse_tchap_guard.units import (
    DAY_MS,
    DURATION_HELP,
    HOUR_MS,
    SECOND_MS,
    SIZE_HELP,
    UnitError,
    format_duration,
    format_size,
)

_USER_ID = re.compile(r"^@[^:\s]+:[^\s]+$")
MAX_USER_ID = 255

# Shorter is surely milliseconds meant as seconds (a bare number is milliseconds).
MIN_WINDOW_MS = SECOND_MS
# Above these, a maximum is surely a typo (and would overflow nothing, but mean nothing).
MAX_COUNT = 10**9
MAX_BYTES = 1024**5  # 1024T
# More requests a second than one Synapse process serves (see docs/speed.md):
# a block threshold that needs more can never be reached.
MAX_REACHABLE_PER_SECOND = 1000
DEFAULT_THUMBNAIL_SIZE = 400


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


# Codes mailed to one account, and notices sent to one owner on one channel.
DEFAULT_MAX_CODES_SENT = Threshold(HOUR_MS, 5)
DEFAULT_NOTICES_LIMIT = Threshold(HOUR_MS, 3)


@attr.frozen
class EmailCodeConfig:
    """One-time codes mailed to the account's verified addresses."""

    valid_for_ms: int = 10 * 60 * SECOND_MS
    max_tries: int = 3  # wrong entries of one code before it is void
    max_sent: Threshold = DEFAULT_MAX_CODES_SENT


@attr.frozen
class DirectoryConfig:
    """How much a directory search may show, and how an account may step up (the
    people budget and the failed step-ups are quotas of their own controls)."""

    # A search shows people not discovered yet only from this many characters on,
    min_search_length: int = 3
    # and at most this many of them at once (a type-ahead shows its best matches).
    new_people_per_search: int = 20
    methods: tuple[Method, ...] = DEFAULT_METHODS
    email_code: EmailCodeConfig = EmailCodeConfig()


@attr.frozen
class OwnerNoticesConfig:
    """Telling an account's owner that it was blocked, or stepped up: where, and how
    often at most (per account and channel), so notices cannot flood an inbox."""

    email: bool = True
    server_notice: bool = True
    limit: Threshold = DEFAULT_NOTICES_LIMIT


def _frozen(quotas: Mapping[str, Quota]) -> Mapping[str, Quota]:
    return MappingProxyType(dict(quotas))


@attr.frozen
class GuardConfig:
    mode: Mode = Mode.ENFORCE
    exempt_users: frozenset[str] = frozenset()
    on_error: OnError = OnError.ALLOW
    # Each control's quota, by name (`controls.CONTROLS`); a control turned off has
    # an empty one.
    quotas: Mapping[str, Quota] = attr.field(
        factory=lambda: _frozen(default_quotas()), converter=_frozen
    )
    # Thumbnails at most this many pixels wide and high count as small thumbnails
    # (0: none does, all count as downloads).
    small_thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE
    directory: DirectoryConfig | None = DirectoryConfig()  # None: no people budget
    blocking: BlockingConfig = BlockingConfig()
    owner_notices: OwnerNoticesConfig | None = OwnerNoticesConfig()
    retention_ms: int = 90 * DAY_MS

    @property
    def enforcing(self) -> bool:
        return self.mode is Mode.ENFORCE

    def quota(self, name: str) -> Quota:
        return self.quotas[name]


_DEFAULT_NOTICES_OR_NONE: OwnerNoticesConfig | None = OwnerNoticesConfig()
_OFF = Quota()


def parse_config(raw: Any) -> GuardConfig:
    """Build the guard's config from the module's `config:` mapping.

    An absent key keeps its default. `null` turns off what it names (a control, its
    limits, its block threshold, a limit's `max` or `max_bytes`), and is refused,
    with the key named, where nothing can be turned off.
    """
    top = _Section(raw, ())
    quotas = default_quotas()
    for spec in CONTROLS:
        if spec.section is not None and spec is not SMALL_THUMBNAILS:
            quotas[spec.name] = top.get(
                spec.section, _quota_parser(spec), spec.default, off=_OFF
            )
    # null: no thumbnail has a quota of its own, all count as downloads.
    size, quotas[SMALL_THUMBNAILS.name] = top.get(
        "small_thumbnails",
        _parse_small_thumbnails,
        (DEFAULT_THUMBNAIL_SIZE, SMALL_THUMBNAILS.default),
        off=(0, _OFF),
    )
    directory, quotas[DIRECTORY.name], quotas[FAILED_STEP_UPS.name] = top.get(
        "directory",
        _parse_directory,
        (DirectoryConfig(), DIRECTORY.default, FAILED_STEP_UPS.default),
        off=(None, _OFF, _OFF),
    )
    config = GuardConfig(
        mode=top.choice("mode", Mode, Mode.ENFORCE),
        exempt_users=top.get(
            "exempt_users", _parse_user_ids, frozenset(), off=frozenset()
        ),
        on_error=top.choice("on_error", OnError, OnError.ALLOW),
        quotas=quotas,
        small_thumbnail_size=size,
        directory=directory,
        blocking=top.get(
            "blocking",
            _parse_blocking,
            BlockingConfig(),
            off=_NotOff("to never block, set block_at: null in each control"),
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
    try:
        return units.parse_duration(value)
    except UnitError as error:
        raise _error(path, f"{quoted(value)} {error}") from None


def parse_size(value: Any, path: tuple[str, ...]) -> int:
    """Bytes from `500K`, `20M`, `2G`, `1T` or a bare number of bytes, as Synapse."""
    try:
        return units.parse_size(value)
    except UnitError as error:
        raise _error(path, f"{quoted(value)} {error}") from None


def is_user_id(value: Any) -> bool:
    """Shaped like `@localpart:server`, printable, at most 255 characters as the spec
    wants (Synapse checks the rest where it matters)."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_USER_ID
        and value.isprintable()
        and _USER_ID.match(value) is not None
    )


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


def _quota_parser(spec: ControlSpec) -> Callable[[Any, tuple[str, ...]], Quota]:
    """A parser for one control's section: its `limits` and `block_at` (and
    `max_per_request`, for a control whose default has one); absent keys keep the
    control's defaults."""

    def parse(raw: Any, path: tuple[str, ...]) -> Quota:
        section = _Section(raw, path)
        quota = _read_quota(section, spec)
        section.reject_unknown()
        return quota

    return parse


def _read_quota(section: _Section, spec: ControlSpec) -> Quota:
    """A control's `limits` and `block_at` (and `max_per_request`, if its default has
    one), with the checks that make them mean something."""
    path = section.path
    default = spec.default
    limits = section.get(
        "limits",
        lambda v, p: _parse_limits(v, p, spec.counts_bytes),
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


def _parse_directory(
    raw: Any, path: tuple[str, ...]
) -> tuple[DirectoryConfig | None, Quota, Quota]:
    """The directory section: its settings, the people budget's quota and the failed
    step-ups' (`free: null` lifts the budget, the step-up with it)."""
    section = _Section(raw, path)
    default = DIRECTORY.default
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
    settings = DirectoryConfig()
    methods = section.get("step_up_methods", _parse_methods, settings.methods)
    email_code = section.get("email_code", _parse_email_code, EmailCodeConfig())
    block_at = section.get("block_at", _parse_threshold, default.block_at, off=None)
    failed = section.get(
        "failed_step_ups_block_at",
        _parse_threshold,
        FAILED_STEP_UPS.default.block_at,
        off=None,
    )
    min_length = section.get("min_search_length", _maximum, settings.min_search_length)
    per_search = section.get(
        "new_people_per_search", _maximum, settings.new_people_per_search
    )
    section.reject_unknown()
    for key, threshold in (
        ("block_at", block_at),
        ("failed_step_ups_block_at", failed),
    ):
        if threshold is not None:
            _check_reachable(threshold, (*path, key), key in section.raw)
    failed_step_ups = Quota(block_at=failed)
    if free is None:
        # `free: null`: discovering people is not limited (step-ups are not needed).
        return None, _OFF, failed_step_ups
    _check_step_up_budget(free, after, path)
    people = Quota(
        limits=(free,),
        step_up=StepUp(valid_for, (after,)),
        block_at=attr.evolve(block_at, counts=Counting.REFUSALS) if block_at else None,
    )
    directory = DirectoryConfig(
        min_search_length=min_length,
        new_people_per_search=per_search,
        methods=methods,
        email_code=email_code,
    )
    return directory, people, failed_step_ups


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


def _parse_small_thumbnails(raw: Any, path: tuple[str, ...]) -> tuple[int, Quota]:
    section = _Section(raw, path)
    max_size = section.get("max_size", _maximum, DEFAULT_THUMBNAIL_SIZE)
    quota = _read_quota(section, SMALL_THUMBNAILS)
    section.reject_unknown()
    return max_size, quota


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
    longest, control = max(
        (config.quota(spec.name).longest_window_ms, _config_key(spec))
        for spec in CONTROLS
    )
    if config.retention_ms < longest:
        default = "" if given else " (the default)"
        raise _error(
            ("retention",),
            f"{format_duration(config.retention_ms)}{default} is shorter than the"
            f" longest window counted ({format_duration(longest)}, in {control}):"
            " the audit trail would be gone before the counts it explains. Use at"
            f" least {format_duration(longest)}",
        )


def _config_key(spec: ControlSpec) -> str:
    """Where an admin sets a control's quota."""
    return spec.section or "directory"


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
    described: dict[str, Any] = {
        "mode": config.mode.value,
        "exempt_users": sorted(config.exempt_users),
        "on_error": config.on_error.value,
    }
    for spec in CONTROLS:
        if spec.section is not None:
            described[spec.section] = describe_quota(config.quota(spec.name))
    described[SMALL_THUMBNAILS.name]["max_size"] = config.small_thumbnail_size
    described["directory"] = describe_directory(config)
    described["blocking"] = {
        "duration": format_duration(config.blocking.duration_ms),
        "end_sessions": config.blocking.end_sessions,
    }
    described["owner_notices"] = describe_owner_notices(config.owner_notices)
    described["retention"] = format_duration(config.retention_ms)
    return described


def describe_directory(config: GuardConfig) -> dict[str, Any] | None:
    directory = config.directory
    if directory is None:
        return None
    quota = config.quota(DIRECTORY.name)
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
            config.quota(FAILED_STEP_UPS.name).block_at
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
