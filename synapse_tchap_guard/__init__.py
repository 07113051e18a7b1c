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
from synapse_tchap_guard.config import GuardConfig, describe, parse_config
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.controls import directory_control, quota_control
from synapse_tchap_guard.gates.directory import DirectoryGate
from synapse_tchap_guard.gates.joins import JoinGate
from synapse_tchap_guard.gates.media import MediaGate
from synapse_tchap_guard.gates.quota import QuotaGate
from synapse_tchap_guard.metrics import GuardMetrics
from synapse_tchap_guard.policy import DirectoryRules, Quota
from synapse_tchap_guard.request_gate import RequestGate
from synapse_tchap_guard.step_up import StepUpResource
from synapse_tchap_guard.store import GuardStore

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
        self._context = context = GuardContext(
            api, config, GuardStore(api, node), AuditLog(node)
        )
        self._blocking = blocking = Blocking(context, BlockRegistry())
        metrics = GuardMetrics(
            api.server_name, lambda: blocking.registry.count_in_force(context.now())
        )
        context.audit.listeners.append(metrics.observe)
        joins_control = quota_control(
            "public_room_joins", "public room joins", config.public_room_joins
        )
        media_control = quota_control(
            "media_downloads", "media downloads", config.media_downloads
        )
        self._controls = [joins_control, media_control]
        joins = JoinGate(context, QuotaGate(context, blocking, joins_control))
        media = MediaGate(context, QuotaGate(context, blocking, media_control))
        internals.watch_media_responses(media.on_media_response)
        self._live_counts = [media.counts]
        directory = (
            self._directory(config.directory, blocking) if config.directory else None
        )
        if directory is not None:
            self._live_counts.append(directory.counts)
        for counts in self._live_counts:
            blocking.on_counters_reset.append(counts.forget)

        api.register_spam_checker_callbacks(
            user_may_join_room=joins.user_may_join_room,
            check_login_for_spam=blocking.check_login_for_spam,
            check_username_for_spam=(
                directory.check_username_for_spam if directory else None
            ),
        )
        api.register_account_validity_callbacks(
            is_user_expired=RequestGate(
                context, blocking.registry, media, directory
            ).is_user_expired
        )
        api.register_web_resource(
            ADMIN_PREFIX,
            AdminResource(context, blocking, self._controls, self._live_counts),
        )
        api.run_as_background_process("tchap_guard_start", self._start)

    def _directory(self, rules: DirectoryRules, blocking: Blocking) -> DirectoryGate:
        """The directory gate, and the step-up endpoint that lifts its budget."""
        context = self._context
        control = directory_control(rules)
        failures_control = quota_control(
            "failed_step_ups",
            "failed re-authentications",
            Quota(block_at=rules.failed_step_ups_block_at),
        )
        self._controls += [control, failures_control]
        directory = DirectoryGate(context, QuotaGate(context, blocking, control), rules)
        failures = QuotaGate(context, blocking, failures_control)
        self._api.register_web_resource(
            step_up.PATH, StepUpResource(context, rules, directory, failures)
        )
        return directory

    @staticmethod
    def parse_config(config: dict[str, Any]) -> GuardConfig:
        return parse_config(config)

    async def _start(self) -> None:
        """Prepare the tables and load the blocks, then start the background work."""
        api = self._api
        try:
            await self._context.store.prepare()
            await self._blocking.reload()
        except Exception:
            logger.exception("tchap_guard could not prepare its tables; retrying")
            api.delayed_background_call(RETRY_START_MS, self._start)
            return
        self._context.readiness.set_ready()
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
        core: Any = reactor
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
            attempts_before=now - longest,
            history_before=now - self._config.retention_ms,
        )
        if removed:
            logger.info("tchap_guard pruned %d old rows", removed)
