"""The errors a refused client receives: their codes and their wording, in one place.

Each one uses an errcode clients already handle and tells the user what to do next.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

from synapse.module_api.errors import Codes, SynapseError

from synapse_tchap_guard.inputs import one_line
from synapse_tchap_guard.model import Block
from synapse_tchap_guard.policy import Limit, Measure, Threshold, Verdict
from synapse_tchap_guard.units import format_duration, format_size

_ASK_ADMIN = "If you need more, contact your homeserver administrator."


def limit_exceeded(label: str, verdict: Verdict) -> SynapseError:
    """429 M_LIMIT_EXCEEDED with `retry_after_ms` and `Retry-After`, as Synapse's own."""
    assert isinstance(verdict.rule, Limit) and verdict.retry_after_ms is not None
    window = format_duration(verdict.rule.window_ms)
    if verdict.measure is Measure.BYTES:
        allowance = f"{format_size(verdict.rule_max or 0)}B per {window}"
    else:
        allowance = f"{verdict.rule_max} per {window}"
    wait = format_wait(verdict.retry_after_ms)
    return SynapseError(
        429,
        f"Too many {label}: the limit is {allowance}. Try again in {wait}. {_ASK_ADMIN}",
        Codes.LIMIT_EXCEEDED,
        additional_fields={"retry_after_ms": verdict.retry_after_ms},
        headers={"Retry-After": str(math.ceil(verdict.retry_after_ms / 1000))},
    )


def too_large(label: str, verdict: Verdict) -> SynapseError:
    """400 for a request that asks more at once than may ever be served: waiting
    would not help, asking less would (so there is no retry time)."""
    most = verdict.rule_max
    return SynapseError(
        400,
        f"This request asks for {verdict.count} {label} at once; at most {most} may"
        f" be read in one request. Ask for {most} or fewer (the `limit` of the"
        " request, or the size of a search's results and context).",
        Codes.INVALID_PARAM,
    )


# MSC4363 (step-up authentication), unstable prefix: the closest the spec has to
# "authenticate again, then retry". The step-up URL is ours, under our namespace.
STEP_UP_ERRCODE = "org.matrix.msc4363.M_INSUFFICIENT_USER_AUTHENTICATION"
STEP_UP_MAX_AGE = "org.matrix.msc4363.max_age"
STEP_UP_URL = "fr.gouv.tchap.guard.step_up_url"
BUDGET_RESETS = "fr.gouv.tchap.guard.budget_resets_in_ms"


def step_up_required(
    label: str, url: str, valid_for_ms: int, verdict: Verdict
) -> SynapseError:
    """401 asking the user to re-authenticate (User-Interactive Auth at `url`)."""
    assert isinstance(verdict.rule, Limit) and verdict.retry_after_ms is not None
    window = format_duration(verdict.rule.window_ms)
    return SynapseError(
        401,
        f"You have reached the limit of {verdict.rule_max} {label} per {window}."
        f" To go on, confirm it is you: re-authenticate at {url} (or wait"
        f" {format_wait(verdict.retry_after_ms)}).",
        STEP_UP_ERRCODE,
        additional_fields={
            STEP_UP_MAX_AGE: valid_for_ms // 1000,
            STEP_UP_URL: url,
            BUDGET_RESETS: verdict.retry_after_ms,
        },
    )


def no_step_up_method() -> SynapseError:
    """The account can use none of the configured step-up methods."""
    return SynapseError(
        403,
        "This account has none of the ways to confirm it is you that this homeserver"
        " accepts (such as single sign-on, or a verified email address for a code)."
        " Contact your homeserver administrator.",
        Codes.FORBIDDEN,
    )


def too_many_codes(limit: Threshold, retry_after_ms: int) -> SynapseError:
    """429: the account was mailed as many step-up codes as the window allows."""
    return SynapseError(
        429,
        f"Too many codes requested: at most {limit.max} per"
        f" {format_duration(limit.window_ms)}. Use the last code you received, or try"
        f" again in {format_wait(retry_after_ms)}.",
        Codes.LIMIT_EXCEEDED,
        additional_fields={"retry_after_ms": retry_after_ms},
        headers={"Retry-After": str(math.ceil(retry_after_ms / 1000))},
    )


def account_blocked(block: Block) -> SynapseError:
    """401 M_USER_LOCKED with `soft_logout`, the spec's answer for a locked account."""
    if block.until_ts is None:
        until = "until an administrator lifts the block"
    else:
        until = f"until {format_moment(block.until_ts)}"
    return SynapseError(
        401,
        # One line: Synapse logs the message of every error it answers.
        f"This account is blocked by the homeserver's security policy"
        f" ({one_line(block.reason)})"
        f" {until}. Contact your homeserver administrator if this is a mistake.",
        Codes.USER_LOCKED,
        additional_fields={"soft_logout": True},
    )


def login_refused(block: Block) -> SynapseError:
    """Login answers 403 with the same errcode and wording as every other request."""
    error = account_blocked(block)
    return SynapseError(403, error.msg, Codes.USER_LOCKED)


def guard_unavailable() -> SynapseError:
    """The admin chose `on_error: deny` and the guard's tables cannot answer."""
    return SynapseError(
        503,
        "The homeserver cannot check this request right now. Try again in a moment.",
        Codes.UNKNOWN,
        headers={"Retry-After": "5"},
    )


def tables_unavailable() -> SynapseError:
    """For the admin API and the step-up: the guard's tables cannot answer."""
    return SynapseError(
        503,
        "The guard's tables cannot answer right now (the homeserver's log says why)."
        " Try again in a moment.",
        Codes.UNKNOWN,
        headers={"Retry-After": "5"},
    )


def format_wait(ms: int) -> str:
    seconds = math.ceil(ms / 1000)
    if seconds < 120:
        return f"{seconds} seconds"
    minutes = math.ceil(seconds / 60)
    if minutes < 120:
        return f"{minutes} minutes"
    return f"{math.ceil(minutes / 60)} hours"


def format_moment(ts_ms: int) -> str:
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M UTC")
