"""The controls, as data: one row each, that the parser, the descriptions, the
retention check, the wiring, the metrics and the admin view all loop over.

Adding a control is a row here, plus the few lines (in a gate) that say what a
request costs it. A `Control` is a row with the quota the config gave it: how it
refuses, how it reports a decision to the SIEM, how a key stands against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attr
from synapse.module_api.errors import SynapseError

from synapse_tchap_guard import responses
from synapse_tchap_guard.audit import (
    AuditEvent,
    describe_block,
    format_timestamp,
)
from synapse_tchap_guard.inputs import RequestInfo
from synapse_tchap_guard.model import Block
from synapse_tchap_guard.policy import (
    AccountMarks,
    Counting,
    Counts,
    Decision,
    Limit,
    Quota,
    StepUp,
    Threshold,
    Verdict,
    usage,
)
from synapse_tchap_guard.units import DAY_MS, GIB, HOUR_MS, MINUTE_MS, format_duration


@attr.frozen
class ControlSpec:
    name: str  # as in the config, the SIEM events and the metrics
    label: str  # "public rooms reached", as in "Too many public rooms reached"
    unit: str  # what one unit is, in the plural: "messages"
    default: Quota
    # The top-level config section that is its quota (None: read within another).
    section: str | None
    distinct: bool = False  # a target already served in the window costs nothing
    counts_bytes: bool = False  # its limits may bound bytes (`max_bytes`)


PUBLIC_ROOM_JOINS = ControlSpec(
    "public_room_joins",
    "public rooms reached",
    "rooms",
    Quota(
        limits=(Limit(HOUR_MS, max=10), Limit(DAY_MS, max=30)),
        block_at=Threshold(DAY_MS, 60),
    ),
    section="public_room_joins",
    distinct=True,
)
MEDIA_DOWNLOADS = ControlSpec(
    "media_downloads",
    "media downloads",
    "downloads",
    Quota(
        limits=(
            Limit(MINUTE_MS, max=120),
            Limit(HOUR_MS, max=1000, max_bytes=2 * GIB),
            Limit(DAY_MS, max=4000, max_bytes=10 * GIB),
        ),
        block_at=Threshold(HOUR_MS, 3000),
    ),
    section="media_downloads",
    counts_bytes=True,
)
# Thumbnails no larger than an avatar: a client loads them by the hundred, and a
# refused one makes Element fetch the full picture instead.
SMALL_THUMBNAILS = ControlSpec(
    "small_thumbnails",
    "small thumbnails",
    "thumbnails",
    Quota(
        limits=(
            Limit(MINUTE_MS, max=1000),
            Limit(HOUR_MS, max=5000),
            Limit(DAY_MS, max=20000),
        ),
        block_at=Threshold(HOUR_MS, 10000),
    ),
    section="small_thumbnails",
)
# Element loads a room's history 50 messages a page, several pages to fill a screen;
# the June 2026 attack read 643,000.
MESSAGE_HISTORY = ControlSpec(
    "message_history",
    "messages read",
    "messages",
    Quota(
        limits=(Limit(HOUR_MS, max=5000), Limit(DAY_MS, max=20000)),
        block_at=Threshold(HOUR_MS, 30, Counting.REFUSALS),
        max_per_request=1000,  # Synapse's own cap on `/messages`
    ),
    section="message_history",
)
DIRECTORY = ControlSpec(
    "directory",
    "people discovered",
    "people",
    Quota(
        limits=(Limit(DAY_MS, max=3000),),
        step_up=StepUp(12 * HOUR_MS, (Limit(DAY_MS, max=20000),)),
        block_at=Threshold(DAY_MS, 30, Counting.REFUSALS),
    ),
    section=None,  # `directory:`, with the search and step-up settings
    distinct=True,
)
FAILED_STEP_UPS = ControlSpec(
    "failed_step_ups",
    "failed re-authentications",
    "failed re-authentications",
    Quota(block_at=Threshold(HOUR_MS, 5)),
    section=None,  # `directory.failed_step_ups_block_at`
)

CONTROLS: tuple[ControlSpec, ...] = (
    PUBLIC_ROOM_JOINS,
    MEDIA_DOWNLOADS,
    SMALL_THUMBNAILS,
    MESSAGE_HISTORY,
    DIRECTORY,
    FAILED_STEP_UPS,
)
BY_NAME: Mapping[str, ControlSpec] = {spec.name: spec for spec in CONTROLS}


def default_quotas() -> dict[str, Quota]:
    return {spec.name: spec.default for spec in CONTROLS}


@attr.frozen
class Control:
    """A control as configured."""

    spec: ControlSpec
    quota: Quota

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def distinct(self) -> bool:
        return self.spec.distinct

    @property
    def longest_window_ms(self) -> int:
        return self.quota.longest_window_ms

    @property
    def active(self) -> bool:
        return self.quota.active

    def refusal(self, verdict: Verdict, step_up_url: str) -> SynapseError:
        """What the client of a refused request gets: a 429 it knows; a 400 for a
        request too large to ever pass; or, when re-authenticating would lift the
        limit, a 401 that says where."""
        if verdict.too_large:
            return responses.too_large(self.spec.unit, verdict)
        if verdict.step_up and self.quota.step_up is not None:
            return responses.step_up_required(
                self.label, step_up_url, self.quota.step_up.valid_for_ms, verdict
            )
        return responses.limit_exceeded(self.label, verdict)

    def block_reason(self, verdict: Verdict) -> str:
        assert verdict.rule is not None
        window = format_duration(verdict.rule.window_ms)
        return f"too many {self.label}: {verdict.count} {verdict.measure.value} in {window}"

    def events(
        self,
        user_id: str,
        target: str | None,
        verdict: Verdict,
        block: Block | None,
        now: int,
        request: RequestInfo | None,
        mode: str,
        details: Mapping[str, object] | None = None,
    ) -> tuple[AuditEvent, ...]:
        """The events that report a verdict (none for an allowed request)."""
        rule = verdict.rule
        decision = verdict.decision
        if not decision.reported or rule is None:
            return ()
        window = format_duration(rule.window_ms)
        guard: dict[str, object] = {
            "control": self.name,
            "mode": mode,
            "decision": decision.value,
            "window": window,
            "window_ms": rule.window_ms,
            "measure": verdict.measure.value,
            "count": verdict.count,
            "limit": verdict.rule_max,
            "target": target,
            **(details or {}),
        }
        if verdict.retry_after_ms is not None:
            guard["retry_after_ms"] = verdict.retry_after_ms
        if verdict.too_large:
            guard["too_large"] = True
        if self.quota.step_up is not None:
            guard["step_up_required"] = verdict.step_up
        if block is not None:
            guard["block"] = describe_block(block)
        if decision.escalates:
            reason = self.block_reason(verdict)
        elif verdict.too_large:
            reason = f"a request for more than {verdict.rule_max} {self.spec.unit}"
        else:
            reason = f"limit of {verdict.rule_max} {self.label} per {window} reached"
        action = decision.value
        if decision is Decision.DENY and verdict.step_up:
            action = "step_up_required"
        summary = (
            f"{verdict.count} asked, at most {verdict.rule_max} at once"
            if verdict.too_large
            else f"{verdict.count}/{verdict.rule_max} in {window}"
        )
        return (
            AuditEvent(
                action=action,
                ts=now,
                user_id=user_id,
                message=f"{action}: {user_id}, {self.label} {summary}",
                reason=reason,
                request=request,
                guard=guard,
            ),
        )

    def report(self, counts: Counts, now: int, marks: AccountMarks) -> dict[str, Any]:
        """A key's standing against each rule, for the admin API."""
        limits: list[dict[str, Any]] = []
        block_at = None
        for entry in usage(self.quota, counts, now, marks):
            rule = entry.rule
            described = _window(rule.window_ms)
            if isinstance(rule, Threshold):
                block_at = {
                    **described,
                    rule.counts.value: entry.count,
                    "max": rule.max,
                }
                continue
            described.update(count=entry.count, max=rule.max)
            if rule.max_bytes is not None:
                described.update(bytes=entry.bytes, max_bytes=rule.max_bytes)
            limits.append(described)
        standing: dict[str, Any] = {"limits": limits, "block_at": block_at}
        if self.quota.step_up is not None:
            stepped_up = marks.stepped_up(now)
            standing["step_up"] = {
                "stepped_up": stepped_up,
                "valid_until": _moment(marks.step_up_until_ts) if stepped_up else None,
                "last": _moment(marks.step_up_ts),
            }
        return standing


def _window(window_ms: int) -> dict[str, Any]:
    return {"window": format_duration(window_ms), "window_ms": window_ms}


def _moment(ts: int) -> str | None:
    return format_timestamp(ts) if ts else None
