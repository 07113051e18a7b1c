"""Security events for a SIEM: one schema, one writer.

Every decision an analyst cares about becomes one `AuditEvent`, written on the
`synapse_tchap_guard.events` logger and, by `EcsJsonFormatter`, as one JSON object per
line with Elastic Common Schema field names. Values are JSON-escaped and non-ASCII is
written as \\u escapes, so no user-controlled string (room name, user agent...) can
break a line or forge a field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import attr

from synapse_tchap_guard.inputs import RequestInfo, one_line
from synapse_tchap_guard.model import Block
from synapse_tchap_guard.units import format_duration

EVENTS_LOGGER = "synapse_tchap_guard.events"
ECS_VERSION = "8.11.0"
_RECORD_FIELD = "tchap_guard_ecs"

logger = logging.getLogger(EVENTS_LOGGER)


@attr.frozen
class Kind:
    """How one action maps onto ECS's event.outcome, event.category and event.type."""

    outcome: str
    category: tuple[str, ...]
    type: tuple[str, ...]


# The catalogue of actions (event.action), documented in docs/siem.md.
ACTIONS: Mapping[str, Kind] = {
    "started": Kind("success", ("process",), ("start",)),
    "deny": Kind("failure", ("web",), ("denied",)),
    "would_deny": Kind("success", ("web",), ("allowed", "indicator")),
    "block": Kind("failure", ("iam", "session"), ("user", "change", "denied")),
    "would_block": Kind("success", ("iam",), ("user", "indicator")),
    "block_expired": Kind("success", ("iam",), ("user", "change")),
    "login_refused": Kind("failure", ("authentication",), ("denied",)),
    "sessions_ended": Kind("success", ("session",), ("end",)),
    "admin_block": Kind("success", ("iam",), ("user", "change", "admin")),
    "admin_unblock": Kind("success", ("iam",), ("user", "change", "admin")),
    "admin_view": Kind("success", ("iam",), ("access", "admin")),
    "database_error": Kind("unknown", ("database",), ("error",)),
    "step_up_required": Kind("failure", ("web",), ("denied",)),
    "step_up_succeeded": Kind("success", ("authentication",), ("start",)),
    "step_up_failed": Kind("failure", ("authentication",), ("start",)),
    "step_up_code_sent": Kind("success", ("authentication",), ("info",)),
    "owner_notified": Kind("success", ("email", "iam"), ("info",)),
    "owner_not_notified": Kind("failure", ("email", "iam"), ("info",)),
}


@attr.frozen
class AuditEvent:
    """One security-relevant fact. `user_id` is the account concerned; `actor` an admin."""

    action: str
    ts: int
    user_id: str | None
    message: str
    reason: str | None = None
    actor: str | None = None
    request: RequestInfo | None = None
    guard: Mapping[str, Any] = attr.Factory(dict)

    def __attrs_post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown audit action {self.action!r}")

    @property
    def outcome(self) -> str:
        return ACTIONS[self.action].outcome

    def to_ecs(self, node: str) -> dict[str, Any]:
        """The event as an ECS document; `node` names the Synapse process."""
        kind = ACTIONS[self.action]
        event: dict[str, Any] = {
            "kind": "event",
            "module": "tchap_guard",
            "dataset": "tchap_guard.events",
            "action": self.action,
            "outcome": kind.outcome,
            "category": list(kind.category),
            "type": list(kind.type),
        }
        if self.reason:
            event["reason"] = self.reason
        doc: dict[str, Any] = {
            "@timestamp": format_timestamp(self.ts),
            "message": self.message,
            "ecs": {"version": ECS_VERSION},
            "event": event,
            "service": {"type": "synapse", "node": {"name": node}},
        }
        if self.actor is not None:
            doc["user"] = {"id": self.actor}
            if self.user_id is not None:
                doc["user"]["target"] = {"id": self.user_id}
        elif self.user_id is not None:
            doc["user"] = {"id": self.user_id}
        request = self.request
        if request is not None:
            if request.ip:
                doc["source"] = {"ip": request.ip}
            if request.user_agent:
                doc["user_agent"] = {"original": request.user_agent}
            if request.path:
                doc["url"] = {"path": request.path}
            http_request = {
                key: value
                for key, value in (
                    ("method", request.method),
                    ("id", request.request_id),
                )
                if value
            }
            if http_request:
                doc["http"] = {"request": http_request}
        if self.guard:
            doc["tchap_guard"] = dict(self.guard)
        return doc


class AuditLog:
    """Writes events on the events logger; where they go is the log config's business."""

    def __init__(self, node: str) -> None:
        self.node = node
        # Called with every event as it is written (the metrics count them).
        self.listeners: list[Callable[[AuditEvent], None]] = []

    def emit(self, event: AuditEvent) -> dict[str, Any]:
        for listener in self.listeners:
            listener(event)
        document = event.to_ecs(self.node)
        level = logging.WARNING if event.outcome == "failure" else logging.INFO
        if event.action == "database_error":
            level = logging.ERROR
        # The main log gets the message on one line, whatever it quotes (an admin's
        # reason, a target); the events file gets the document, JSON-escaped.
        logger.log(
            level, "%s", one_line(event.message), extra={_RECORD_FIELD: document}
        )
        return document


class EcsJsonFormatter(logging.Formatter):
    """One ECS JSON object per line, for the events file a SIEM tails.

    Records that are not guard events (should a log config route other loggers here)
    still come out as valid ECS lines, with their level, logger and message.
    """

    def format(self, record: logging.LogRecord) -> str:
        document = getattr(record, _RECORD_FIELD, None)
        if not isinstance(document, dict):
            document = {
                "@timestamp": format_timestamp(int(record.created * 1000)),
                "message": record.getMessage(),
                "ecs": {"version": ECS_VERSION},
            }
        document = {
            **document,
            "log": {"level": record.levelname.lower(), "logger": record.name},
        }
        return encode_line(document)


def encode_line(document: Mapping[str, Any]) -> str:
    """JSON on one line, pure ASCII: newlines and U+2028 in values stay escaped."""
    return json.dumps(document, ensure_ascii=True, separators=(",", ":"), default=str)


def format_timestamp(ts_ms: int) -> str:
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def describe_block(block: Block) -> dict[str, object]:
    """A block as events and the admin API show it."""
    described: dict[str, object] = {
        "id": block.id,
        "user_id": block.user_id,
        "control": block.control,
        "reason": block.reason,
        "blocked_by": block.blocked_by,
        "since": format_timestamp(block.since_ts),
        "since_ms": block.since_ts,
        "until": format_timestamp(block.until_ts) if block.until_ts else None,
        "until_ms": block.until_ts,
    }
    if block.until_ts is not None:
        described["duration"] = format_duration(block.until_ts - block.since_ts)
    if block.ended_ts is not None:
        described.update(
            ended=format_timestamp(block.ended_ts),
            ended_ms=block.ended_ts,
            ended_by=block.ended_by,
            end_reason=block.end_reason,
        )
    return described
