"""Telling an account's owner, where they will see it, that it was blocked or stepped up.

Two channels: an email to the account's verified addresses (when Synapse can send
mail) and a message in the account's server notices room (when `server_notices` is
configured). Notices are queued in the guard's tables by whichever process saw what
happened, at most `owner_notices.limit` per account and channel, and delivered in the
background by the main process, the only one Synapse lets send server notices: a
request never waits on a mail server. Every notice sent, or not, is a SIEM event.
"""

from __future__ import annotations

import logging
from typing import Any

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import notice_texts
from synapse_tchap_guard.audit import AuditEvent
from synapse_tchap_guard.config import OwnerNoticesConfig
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.inputs import RequestInfo
from synapse_tchap_guard.mail import Mailer
from synapse_tchap_guard.model import Block
from synapse_tchap_guard.notice_texts import Circumstances, Message, mask_address
from synapse_tchap_guard.policy import Limit
from synapse_tchap_guard.responses import format_wait
from synapse_tchap_guard.step_up_methods import Method
from synapse_tchap_guard.store.database import StoreUnavailable
from synapse_tchap_guard.store.notices import FAILED, SENT, Notice
from synapse_tchap_guard.units import format_duration

logger = logging.getLogger(__name__)

EMAIL = "email"
SERVER_NOTICE = "server_notice"
DELIVER_MS = 1000
_BATCH = 50


class OwnerNotices:
    def __init__(
        self, context: GuardContext, config: OwnerNoticesConfig, mailer: Mailer
    ) -> None:
        self._context = context
        self._config = config
        self._mailer = mailer
        api = context.api
        self.channels: list[str] = []
        if config.email and mailer.available:
            self.channels.append(EMAIL)
        if config.server_notice and internals.server_notices_configured(api):
            self.channels.append(SERVER_NOTICE)
        self.delivers_here = api.worker_name is None  # the main process
        self._delivering = False
        self._again = False

    # --- what happened -----------------------------------------------------------

    def blocked(self, block: Block, request: RequestInfo | None) -> None:
        """A block was just set, by the guard or by an admin."""
        message = notice_texts.block_notice(
            block.user_id,
            self._context.api.server_name,
            block.reason,
            by_admin=not block.by_guard,
            until_ts=block.until_ts,
            seen=_circumstances(block.since_ts, request),
        )
        self._notify(block.user_id, "block", message, {"block_id": block.id})

    def stepped_up(
        self,
        user_id: str,
        method: Method,
        budget: Limit,
        now: int,
        until: int,
        request: RequestInfo | None,
    ) -> None:
        """The account just stepped up: if it was not its owner, they must know."""
        message = notice_texts.step_up_notice(
            user_id,
            self._context.api.server_name,
            method.label,
            f"{budget.max} people in {format_wait(budget.window_ms)}",
            until,
            _circumstances(now, request),
        )
        self._notify(user_id, "step_up", message, {"method": method.value})

    def _notify(
        self, user_id: str, about: str, message: Message, details: dict[str, Any]
    ) -> None:
        if self.channels:
            self._context.api.run_as_background_process(
                "tchap_guard_notify_owner",
                self._queue,
                user_id,
                about,
                message,
                details,
            )

    async def _queue(
        self, user_id: str, about: str, message: Message, details: dict[str, Any]
    ) -> None:
        context = self._context
        now = context.now()
        limit = self._config.limit
        events = []
        for channel in self.channels:
            content: dict[str, Any] = {
                "subject": message.subject,
                "text": message.text,
                "html": message.html,
                **details,
            }
            if channel == EMAIL:
                content["to"] = await self._mailer.addresses(user_id)
                if not content["to"]:
                    events.append(
                        _not_notified(
                            user_id, now, channel, about, "no verified email address"
                        )
                    )
                    continue
            try:
                queued = await context.store.notices.queue(
                    user_id, about, channel, content, now, limit
                )
            except StoreUnavailable as error:
                logger.error(
                    "tchap_guard could not queue a notice for %s: %s", user_id, error
                )
                events.append(
                    _not_notified(user_id, now, channel, about, "database error")
                )
                continue
            if queued is None:
                window = format_duration(limit.window_ms)
                events.append(
                    _not_notified(
                        user_id,
                        now,
                        channel,
                        about,
                        f"rate limited: {limit.max} notices per {window} already",
                    )
                )
        if events:
            await context.report(events)
        if self.delivers_here:
            await self.deliver()

    # --- delivery, on the main process ------------------------------------------------

    async def deliver(self) -> None:
        """Send what is queued (every second, and at once for what this process
        queued). One delivery at a time; a call meanwhile makes it go round again."""
        if self._delivering:
            self._again = True
            return
        self._delivering = True
        try:
            self._again = True
            while self._again:
                self._again = False
                await self._deliver_pending()
        except StoreUnavailable as error:
            logger.error("tchap_guard could not deliver notices: %s", error)
        finally:
            self._delivering = False

    async def _deliver_pending(self) -> None:
        store = self._context.store.notices
        while True:
            notices = await store.pending(_BATCH)
            for notice in notices:
                event = await self._send(notice)
                await store.done(
                    notice.id,
                    SENT if event.action == "owner_notified" else FAILED,
                    self._context.now(),
                )
                await self._context.report([event])
            if len(notices) < _BATCH:
                return

    async def _send(self, notice: Notice) -> AuditEvent:
        content = notice.content
        message = Message(content["subject"], content["text"], content["html"])
        now = self._context.now()
        guard: dict[str, Any] = {
            "channel": notice.channel,
            "about": notice.about,
            "notice_id": notice.id,
        }
        try:
            if notice.channel == EMAIL:
                await self._mailer.send(content["to"], message)
                guard["addresses"] = [mask_address(a) for a in content["to"]]
            else:
                guard["event_id"] = await internals.send_server_notice(
                    self._context.api, notice.user_id, message.server_notice()
                )
        except Exception as error:
            logger.exception(
                "tchap_guard could not send a %s notice to %s",
                notice.channel,
                notice.user_id,
            )
            return _not_notified(
                notice.user_id, now, notice.channel, notice.about, "failed", str(error)
            )
        return AuditEvent(
            action="owner_notified",
            ts=now,
            user_id=notice.user_id,
            message=f"{notice.user_id} told of their {_ABOUT[notice.about]} by {_CHANNEL[notice.channel]}",
            guard=guard,
        )


_ABOUT = {"block": "account's block", "step_up": "step-up"}
_CHANNEL = {EMAIL: "email", SERVER_NOTICE: "server notice"}


def _not_notified(
    user_id: str,
    now: int,
    channel: str,
    about: str,
    why: str,
    error: str | None = None,
) -> AuditEvent:
    guard: dict[str, Any] = {"channel": channel, "about": about, "why": why}
    if error is not None:
        guard["error"] = error
    return AuditEvent(
        action="owner_not_notified",
        ts=now,
        user_id=user_id,
        message=f"{user_id} not told of their {_ABOUT.get(about, about)} by {_CHANNEL[channel]}: {why}",
        reason=why,
        guard=guard,
    )


def _circumstances(ts: int, request: RequestInfo | None) -> Circumstances:
    if request is None:
        return Circumstances(ts)
    return Circumstances(ts, request.ip, request.user_agent)
