"""synapse-tchap-guard: stop one hijacked account from emptying a homeserver.

`TchapGuard` is the module Synapse loads. It parses the config and wires Synapse's
callbacks to the parts that do the work; it decides nothing itself.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Any

from synapse.module_api import ModuleApi
from synapse.module_api.errors import ConfigError
from twisted.internet import defer, reactor

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard import live_counts, step_up
from synapse_tchap_guard.admin_api import PREFIX as ADMIN_PREFIX
from synapse_tchap_guard.admin_api import AdminResource
from synapse_tchap_guard.audit import AuditEvent, AuditLog
from synapse_tchap_guard.blocks import Blocking, BlockRegistry
from synapse_tchap_guard.config import (
    DirectoryConfig,
    GuardConfig,
    describe,
    parse_config,
)
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.controls import Control
from synapse_tchap_guard.gates.counted import CountedGate
from synapse_tchap_guard.gates.directory import DirectoryGate
from synapse_tchap_guard.gates.exact import ExactGate
from synapse_tchap_guard.gates.joins import JoinGate
from synapse_tchap_guard.gates.media import MediaGate
from synapse_tchap_guard.metrics import GuardMetrics
from synapse_tchap_guard.readiness import Readiness
from synapse_tchap_guard.request_gate import RequestGate
from synapse_tchap_guard.step_up import StepUpResource
from synapse_tchap_guard.store import GuardStore
from synapse_tchap_guard.store.database import Database
from synapse_tchap_guard.store.lanes import Lanes

__version__ = "0.1.0"
__all__ = ["TchapGuard"]

logger = logging.getLogger(__name__)

RELOAD_BLOCKS_MS = 1000
EXPIRE_BLOCKS_MS = 5000
PRUNE_MS = 10 * 60 * 1000
RETRY_START_MS = 5000


class TchapGuard:
    def __init__(self, config: GuardConfig, api: ModuleApi) -> None:
        internals.check_internals(api)
        if internals.auth_delegated(api):
            raise ConfigError(
                "synapse_tchap_guard needs Synapse to authenticate requests itself, and"
                " this homeserver delegates authentication to Matrix Authentication"
                " Service: blocks, download quotas and step-up could not be enforced."
                " Remove the module, or the matrix_authentication_service section."
            )
        self._api = api
        self._config = config
        node = api.worker_name or "main"
        clock: Any = reactor  # Twisted's interfaces confuse mypy about `self`
        lanes = Lanes(
            clock,
            lambda work: api.run_as_background_process("tchap_guard_waited_on", work),
        )
        database = Database(api, node, Readiness(clock, "its tables"), lanes)
        self._context = context = GuardContext(
            api, config, GuardStore(database), AuditLog(node), clock
        )
        self._blocking = blocking = Blocking(
            context, BlockRegistry(), Readiness(clock, "the blocks in force")
        )
        self._live_counts: list[live_counts.LiveCounts] = []
        metrics = GuardMetrics(
            api.server_name, lambda: blocking.registry.count_in_force(context.now())
        )
        context.audit.listeners.append(metrics.observe)

        joins = Control(
            "public_room_joins", "public room joins", config.public_room_joins
        )
        media = Control("media_downloads", "media downloads", config.media_downloads)
        self._controls = [joins, media]
        media_gate = MediaGate(self._counted(media))
        internals.watch_media_responses(media_gate.on_media_response)
        directory = self._directory(config.directory) if config.directory else None

        api.register_spam_checker_callbacks(
            user_may_join_room=JoinGate(context, self._exact(joins)).user_may_join_room,
            check_login_for_spam=blocking.check_login_for_spam,
            check_username_for_spam=(
                directory.check_username_for_spam if directory else None
            ),
        )
        api.register_account_validity_callbacks(
            is_user_expired=RequestGate(
                context, blocking, media_gate, directory
            ).is_user_expired
        )
        api.register_web_resource(
            ADMIN_PREFIX,
            AdminResource(context, blocking, self._controls, self._live_counts),
        )
        api.run_as_background_process("tchap_guard_start", self._start)

    def _exact(self, control: Control) -> ExactGate:
        return ExactGate(self._context, self._blocking, control)

    def _counted(self, control: Control) -> CountedGate:
        """A gate counting in memory; its counts are written behind and start over
        when an admin resets the account."""
        gate = CountedGate(self._context, self._exact(control))
        self._live_counts.append(gate.counts)
        self._blocking.on_counters_reset.append(gate.counts.forget)
        return gate

    def _directory(self, directory: DirectoryConfig) -> DirectoryGate:
        """The directory gate, and the step-up endpoint that lifts its budget."""
        context = self._context
        control = Control(
            "directory", "directory lookups", directory.quota, distinct=True
        )
        failures = Control(
            "failed_step_ups", "failed re-authentications", directory.failed_step_ups
        )
        self._controls += [control, failures]
        gate = self._counted(control)
        assert directory.quota.step_up is not None
        self._api.register_web_resource(
            step_up.PATH,
            StepUpResource(
                context, directory.quota.step_up, gate.counts, self._exact(failures)
            ),
        )
        return DirectoryGate(gate, context.config.enforcing)

    @staticmethod
    def parse_config(config: dict[str, Any]) -> GuardConfig:
        return parse_config(config)

    async def _start(self) -> None:
        """Prepare the tables and load the blocks, then start the background work."""
        api = self._api
        try:
            await self._context.store.prepare()
            self._context.store.database.readiness.set_ready()
            await self._blocking.load()
        except Exception:  # the database, or a failed migration: the log says which
            logger.exception("tchap_guard could not prepare its tables; retrying")
            api.delayed_background_call(RETRY_START_MS, self._start)
            return
        self._blocking.loaded.set_ready()
        warnings = await self._unauthenticated_media_warnings()
        api.looping_background_call(
            self._blocking.reload, RELOAD_BLOCKS_MS, run_on_all_instances=True
        )
        for counts in self._live_counts:
            api.looping_background_call(
                counts.sync, live_counts.FLUSH_MS, run_on_all_instances=True
            )
        # The reactor waits for the Deferred: what was counted is written before exit.
        # (Twisted's interface confuses mypy about `self`, hence the Any.)
        core: Any = reactor  # Twisted's interfaces confuse mypy about `self`
        core.addSystemEventTrigger("before", "shutdown", self._flush_at_shutdown)
        if api.should_run_background_tasks():
            api.looping_background_call(self._blocking.expire, EXPIRE_BLOCKS_MS)
            api.looping_background_call(self._prune, PRUNE_MS)
            api.run_as_background_process("tchap_guard_prune", self._prune)
        self._context.audit.emit(
            AuditEvent(
                action="started",
                ts=self._context.now(),
                user_id=None,
                message=f"tchap_guard {__version__} started in {self._config.mode.value} mode",
                guard={
                    "warnings": warnings,
                    "version": __version__,
                    "synapse_version": importlib.metadata.version("matrix-synapse"),
                    "config": describe(self._config),
                },
            )
        )

    def _flush_at_shutdown(self) -> defer.Deferred[None]:
        async def flush_all() -> None:
            for counts in self._live_counts:
                await counts.flush()

        return self._api.run_as_background_process("tchap_guard_flush", flush_all)

    async def _unauthenticated_media_warnings(self) -> list[str]:
        """Media served without an account escapes the download quotas: say so."""
        api = self._api
        if not internals.authenticated_media_enabled(api):
            warnings = [
                "enable_authenticated_media is off: every media file is served without"
                " an account on /_matrix/media/v3/download and /thumbnail, where the"
                " guard cannot count downloads. Set enable_authenticated_media: true."
            ]
        elif api.should_run_background_tasks():
            try:
                count = await internals.count_unauthenticated_media(api)
            except Exception:
                logger.exception("tchap_guard could not count unauthenticated media")
                return []
            warnings = (
                [
                    f"{count} media files predate authenticated media and are still served"
                    " without an account on /_matrix/media/v3/download and /thumbnail,"
                    " where the guard cannot count downloads: refuse those paths at the"
                    " reverse proxy (see the README)."
                ]
                if count
                else []
            )
        else:
            return []
        for warning in warnings:
            logger.warning("tchap_guard: %s", warning)
        return warnings

    async def _prune(self) -> None:
        """Delete rows no window or retention needs (at start-up, then every 10 min)."""
        now = self._context.now()
        longest = max(control.longest_window_ms for control in self._controls)
        removed = await self._context.store.prune(
            lines_before=now - longest, history_before=now - self._config.retention_ms
        )
        if removed:
            logger.info("tchap_guard pruned %d old rows", removed)
