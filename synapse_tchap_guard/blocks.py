"""Blocked accounts: who is blocked, what a block does, how it ends.

The per-request check must cost nothing, so every process keeps the blocks in force in
memory (`BlockRegistry`) and, every second, reads the blocks opened or ended lately
(all of them once a minute); the process that blocks or unblocks an account updates
its copy at once. A login reads the block table itself, so a block set by another
process refuses it at once, and every other request within a second. A database that
cannot answer leaves the last known blocks in force.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Literal

from synapse.module_api import NOT_SPAM

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import responses
from synapse_tchap_guard.audit import AuditEvent, describe_block
from synapse_tchap_guard.block_registry import BlockRegistry
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.controls import Control
from synapse_tchap_guard.inputs import RequestInfo, one_line
from synapse_tchap_guard.model import GUARD, AlreadyBlocked, Block, NewBlock
from synapse_tchap_guard.policy import Decision, Verdict
from synapse_tchap_guard.readiness import Readiness
from synapse_tchap_guard.store.database import StoreUnavailable

logger = logging.getLogger(__name__)

# Every second, a reload reads the blocks opened or ended since the last one began,
# less this: another process's change reaches the database this late after its time
# (a transaction that commits late, clocks a little apart).
WRITE_DELAY_MS = 5000
# And this often it reads every block in force, whatever the clocks did.
FULL_RELOAD_MS = 60_000


class Blocking:
    """Setting and lifting blocks, and what follows from them."""

    def __init__(
        self, context: GuardContext, registry: BlockRegistry, loaded: Readiness
    ) -> None:
        self._context = context
        self.registry = registry
        self.loaded = loaded  # the blocks in force have been read once
        self._reload_failing = False
        self._read_all_at: int | None = None  # when the last full read began
        self._read_at = 0  # when the last read, full or not, began
        # Called with an account whose counters an admin reset, for what counts in memory.
        self.on_counters_reset: list[Callable[[str], Awaitable[None]]] = []
        # Called with each block set here (by the guard or an admin), and its request.
        self.on_blocked: list[Callable[[Block, RequestInfo | None], None]] = []

    async def escalate(
        self,
        user_id: str,
        control: Control,
        verdict: Verdict,
        target: str | None,
        request: RequestInfo | None,
        details: Mapping[str, object],
    ) -> None:
        """The account crossed a control's block threshold: block it (raises the
        client's error), or in monitor mode report that it would have been. Either
        way its count towards the next block starts over."""
        context = self._context
        now = context.now()
        mode = context.config.mode.value

        def events(block: Block | None) -> Sequence[AuditEvent]:
            return control.events(
                user_id, target, verdict, block, now, request, mode, details
            )

        if verdict.decision is not Decision.BLOCK:  # would_block
            await context.unless_store_fails(
                control.name,
                user_id,
                request,
                context.store.accounts.restart_escalation(user_id, now, events(None)),
            )
            context.emit(events(None))
            return
        duration = context.config.blocking.duration_ms
        new = NewBlock(
            control=control.name,
            reason=control.block_reason(verdict),
            blocked_by=GUARD,
            until_ts=now + duration if duration else None,
        )
        try:
            block = await context.unless_store_fails(
                control.name,
                user_id,
                request,
                context.store.blocks.open(user_id, new, now, events, by_guard=True),
            )
        except AlreadyBlocked as blocked:  # by another process, a moment ago
            self.registry.remember(blocked.block, now)
            raise responses.account_blocked(blocked.block) from None
        if block is None:
            return  # the tables could not answer, and `on_error` lets it through
        context.emit(events(block))
        await self.enforce(block, request)
        raise responses.account_blocked(block)

    async def enforce(self, block: Block, request: RequestInfo | None) -> None:
        """Make a block just stored take effect here, tell whoever listens (the owner
        notices), and end the account's sessions.

        The sessions are those the account has now: they end in the background (the
        caller may hold a room's membership lock, and this process refuses the
        account from now on anyway), and one opened after an admin lifted the block
        is never among them.
        """
        self.registry.remember(block, self._context.now())
        for listener in self.on_blocked:
            listener(block, request)
        if not self._context.config.blocking.end_sessions:
            return
        devices = await internals.sessions_of(self._context.api, block.user_id)
        self._context.api.run_as_background_process(
            "tchap_guard_end_sessions", self._end_sessions, block, devices, request
        )

    async def _end_sessions(
        self, block: Block, devices: list[str], request: RequestInfo | None
    ) -> None:
        try:
            await internals.end_sessions(self._context.api, block.user_id, devices)
        except Exception:
            logger.exception(
                "tchap_guard could not end the sessions of %s", one_line(block.user_id)
            )
            return
        await self._context.report(
            [
                AuditEvent(
                    action="sessions_ended",
                    ts=self._context.now(),
                    user_id=block.user_id,
                    message=f"all sessions of {block.user_id} ended by block {block.id}",
                    reason=block.reason,
                    request=request,
                    guard={"block": describe_block(block)},
                )
            ]
        )

    async def block_by_admin(
        self,
        user_id: str,
        admin: str,
        reason: str,
        duration_ms: int,
        request: RequestInfo | None,
    ) -> Block:
        """Raises `store.AlreadyBlocked` if the account is blocked already."""
        context = self._context
        now = context.now()
        new = NewBlock(
            control="admin",
            reason=reason,
            blocked_by=admin,
            until_ts=now + duration_ms if duration_ms else None,
        )

        def events(block: Block) -> list[AuditEvent]:
            return [
                AuditEvent(
                    action="admin_block",
                    ts=now,
                    user_id=user_id,
                    actor=admin,
                    message=f"{admin} blocked {user_id}: {reason}",
                    reason=reason,
                    request=request,
                    guard={
                        "mode": context.config.mode.value,
                        "block": describe_block(block),
                    },
                )
            ]

        block = await context.store.blocks.open(user_id, new, now, events)
        context.emit(events(block))
        await self.enforce(block, request)
        return block

    async def unblock_by_admin(
        self, user_id: str, admin: str, reason: str, request: RequestInfo | None
    ) -> Block | None:
        """Lift the block in force and reset the account's counters; None if not blocked."""
        context = self._context
        now = context.now()

        def events(block: Block) -> list[AuditEvent]:
            return [
                AuditEvent(
                    action="admin_unblock",
                    ts=now,
                    user_id=user_id,
                    actor=admin,
                    message=f"{admin} unblocked {user_id}: {reason}",
                    reason=reason,
                    request=request,
                    guard={"block": describe_block(block), "counters_reset": True},
                )
            ]

        lifted = await context.store.blocks.lift(user_id, admin, reason, now, events)
        if lifted is not None:
            # Stamped after the commit, so that a reload begun before it cannot undo it.
            self.registry.forget(user_id, context.now())
            for reset_counts in self.on_counters_reset:
                await reset_counts(user_id)
            context.emit(events(lifted))
        return lifted

    async def load(self) -> None:
        """Read the blocks in force (at start-up; raises `StoreUnavailable`)."""
        started = self._context.now()
        self.registry.replace_all(
            await self._context.store.blocks.in_force(started), started
        )
        self._read_all_at = self._read_at = started

    async def reload(self) -> None:
        """Refresh this process's copy of the blocks in force (every second): the
        blocks opened or ended lately, or, once a minute, all the blocks in force."""
        store = self._context.store.blocks
        started = self._context.now()
        full = (
            self._read_all_at is None or started - self._read_all_at >= FULL_RELOAD_MS
        )
        try:
            if full:
                blocks = await store.in_force(started)
            else:
                changed = await store.changed(self._read_at - WRITE_DELAY_MS)
        except StoreUnavailable as error:
            if not self._reload_failing:
                logger.error(
                    "tchap_guard cannot reload blocks; keeping the last known: %s",
                    error,
                )
            self._reload_failing = True
            return
        if self._reload_failing:
            logger.info("tchap_guard reloads blocks again")
        self._reload_failing = False
        self._read_at = started
        if full:
            self.registry.replace_all(blocks, started)
            self._read_all_at = started
        else:
            self.registry.apply(changed, started, self._context.now())

    async def expire(self) -> None:
        """Close the blocks whose time is up, with one event each (background process)."""
        context = self._context
        now = context.now()

        def events(block: Block) -> list[AuditEvent]:
            return [
                AuditEvent(
                    action="block_expired",
                    ts=now,
                    user_id=block.user_id,
                    message=f"block {block.id} of {block.user_id} expired",
                    reason=block.reason,
                    guard={"block": describe_block(block)},
                )
            ]

        for block in await context.store.blocks.close_expired(now, events):
            self.registry.forget(block.user_id, now)
            context.emit(events(block))

    async def check_login_for_spam(
        self,
        user_id: str,
        device_id: str | None,
        initial_display_name: str | None,
        request_info: Collection[tuple[str | None, str]],
        auth_provider_id: str | None = None,
    ) -> Literal["NOT_SPAM"]:
        """Refuse to log a blocked account in, whatever the login method."""
        context = self._context
        now = context.now()
        request = internals.request_info(internals.current_request())
        try:
            block = await context.store.blocks.in_force_for(user_id, now)
        except StoreUnavailable as error:
            block = self.registry.in_force(user_id, now)
            if block is None:  # `on_error` decides, as for any request it judges
                context.store_failed("login", user_id, request, error)
        if block is None:
            return NOT_SPAM
        await context.report(
            [
                AuditEvent(
                    action="login_refused",
                    ts=now,
                    user_id=user_id,
                    message=f"login of blocked account {user_id} refused",
                    reason=block.reason,
                    request=request,
                    guard={"block": describe_block(block), "device_id": device_id},
                )
            ]
        )
        raise responses.login_refused(block)
