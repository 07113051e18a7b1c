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
from synapse_tchap_guard import controls as specs
from synapse_tchap_guard import exposure_settings, notices, step_up
from synapse_tchap_guard.admin_api import PREFIX as ADMIN_PREFIX
from synapse_tchap_guard.admin_api import AdminResource
from synapse_tchap_guard.audit import AuditEvent, AuditLog
from synapse_tchap_guard.block_registry import BlockRegistry
from synapse_tchap_guard.blocks import Blocking
from synapse_tchap_guard.clock import Clock
from synapse_tchap_guard.config import (
    DirectoryConfig,
    EmailCodeConfig,
    GuardConfig,
    describe,
    parse_config,
)
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.controls import CONTROLS, Control
from synapse_tchap_guard.counting import journal
from synapse_tchap_guard.counting.awaited import AwaitedResponses
from synapse_tchap_guard.counting.backends import Backend, LocalBackend, RedisBackend
from synapse_tchap_guard.counting.journal import Journal
from synapse_tchap_guard.counting.ledger import Ledger
from synapse_tchap_guard.email_codes import EmailCodes
from synapse_tchap_guard.gates.admission import Admission
from synapse_tchap_guard.gates.history import HistoryGate
from synapse_tchap_guard.gates.media import MediaGate
from synapse_tchap_guard.gates.people import PeopleGate
from synapse_tchap_guard.gates.rooms import RoomsGate
from synapse_tchap_guard.mail import Mailer
from synapse_tchap_guard.metrics import GuardMetrics
from synapse_tchap_guard.notices import OwnerNotices
from synapse_tchap_guard.readiness import Readiness
from synapse_tchap_guard.request_check import RequestCheck
from synapse_tchap_guard.routes import SERVLETS, Routes
from synapse_tchap_guard.step_up import StepUpResource
from synapse_tchap_guard.step_up_methods import Method
from synapse_tchap_guard.store import GuardStore
from synapse_tchap_guard.store.database import Database
from synapse_tchap_guard.store.lanes import Lanes

# The one place the version is written (setup.cfg reads it); see docs/releasing.md.
__version__ = "0.2.0"
__all__ = ["TchapGuard"]

logger = logging.getLogger(__name__)

RELOAD_BLOCKS_MS = 1000
EXPIRE_BLOCKS_MS = 5000
PRUNE_MS = 10 * 60 * 1000
RETRY_START_MS = 5000
# Shared counts outlive the longest window by this much (the slowest write behind).
REDIS_MARGIN_MS = 60_000


class TchapGuard:
    def __init__(
        self,
        config: GuardConfig,
        api: ModuleApi,
        clock: Clock | None = None,
        database: Database | None = None,
    ) -> None:
        """Synapse passes `config` and `api`; tests may give a fake clock, and the
        database to run on (`tests/unit/guard.py`)."""
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
        if clock is None:
            clock = reactor
        self._clock = clock
        if database is None:
            lanes = Lanes(
                clock,
                lambda work: api.run_as_background_process(
                    "tchap_guard_waited_on", work
                ),
            )
            database = Database(api, node, Readiness(clock, "its tables"), lanes)
        self._context = context = GuardContext(
            api, config, GuardStore(database), AuditLog(node), clock
        )
        self._blocking = blocking = Blocking(
            context, BlockRegistry(), Readiness(clock, "the blocks in force")
        )
        metrics = GuardMetrics(
            api.server_name, lambda: blocking.registry.count_in_force(context.now())
        )
        context.audit.listeners.append(metrics.observe)
        self._mailer = Mailer(api)
        self._notices = (
            OwnerNotices(context, config.owner_notices, self._mailer)
            if config.owner_notices
            else None
        )
        if self._notices is not None:
            blocking.on_blocked.append(self._notices.blocked)

        redis = internals.redis_eval(api)
        if redis is None and api.worker_name is not None:
            raise ConfigError(
                "synapse_tchap_guard counts across processes through Synapse's Redis,"
                " and this worker has none: enable `redis` (workers need it anyway)."
            )
        self._controls = controls = [
            Control(spec, config.quota(spec.name)) for spec in CONTROLS
        ]
        by_name = {control.name: control for control in controls}
        backend: Backend = LocalBackend()
        if redis is not None:
            longest = max(control.longest_window_ms for control in controls)
            backend = RedisBackend(redis, longest + REDIS_MARGIN_MS)
        store = context.store
        self._ledger = ledger = Ledger(
            controls,
            store.counts,
            store.accounts,
            backend,
            Journal(store.counts, context.report_rejected),
            context.now,
            context.is_exempt,
            config.enforcing,
        )
        times = context.times
        self._awaited = awaited = AwaitedResponses(ledger.finish, times)
        internals.watch_responses(awaited.on_finished, waiting=awaited)
        admission = Admission(context, blocking, ledger, awaited)

        media_gate = MediaGate(
            admission,
            by_name[specs.MEDIA_DOWNLOADS.name],
            by_name[specs.SMALL_THUMBNAILS.name],
            config.small_thumbnail_size,
        )
        history_gate = HistoryGate(admission, by_name[specs.MESSAGE_HISTORY.name])
        people = None
        if config.directory is not None:
            people = self._people(config.directory, admission, by_name)
        rooms = RoomsGate(
            context,
            admission,
            by_name[specs.PUBLIC_ROOM_JOINS.name],
            people.room_members if people is not None else None,
        )
        self._client_routes = internals.client_routes()
        routes = Routes(self._client_routes)
        internals.check_routes(routes.servlets(), SERVLETS)

        api.register_spam_checker_callbacks(
            user_may_join_room=times.timed("join", rooms.user_may_join_room),
            check_login_for_spam=times.timed("login", blocking.check_login_for_spam),
        )
        if people is not None:
            internals.watch_directory_searches(
                api, times.timed("directory_search", people.search_results)
            )
        request_check = RequestCheck(
            context,
            blocking.registry,
            blocking.loaded,
            routes,
            media_gate.fetch,
            rooms.read,
            history_gate.read,
            people.profile if people is not None else None,
        )
        api.register_account_validity_callbacks(
            is_user_expired=times.timed("request", request_check.is_user_expired)
        )
        internals.watch_searches(api, times.timed("search", history_gate.search))
        blocking.on_counters_reset.append(ledger.refresh_marks)
        api.register_web_resource(
            ADMIN_PREFIX, AdminResource(context, blocking, controls, ledger)
        )
        api.run_as_background_process("tchap_guard_start", self._start)

    def _people(
        self,
        directory: DirectoryConfig,
        admission: Admission,
        by_name: dict[str, Control],
    ) -> PeopleGate:
        """The people budget, and the step-up endpoint that lifts it."""
        context = self._context
        people = by_name[specs.DIRECTORY.name]
        assert people.quota.step_up is not None
        codes = EmailCodes(context, directory.email_code, self._mailer)
        self._api.register_web_resource(
            step_up.PATH,
            StepUpResource(
                context,
                directory,
                people.quota.step_up,
                admission,
                by_name[specs.FAILED_STEP_UPS.name],
                codes,
                self._notices,
            ),
        )
        return PeopleGate(context, admission, people, directory)

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
        warnings = await self._exposure_warnings()
        for warning in self._step_up_warnings() + self._notice_warnings():
            logger.warning("tchap_guard: %s", warning)
            warnings.append(warning)
        api.looping_background_call(
            self._blocking.reload, RELOAD_BLOCKS_MS, run_on_all_instances=True
        )
        api.looping_background_call(
            self._ledger.sync, journal.FLUSH_MS, run_on_all_instances=True
        )
        # The reactor waits for the Deferred: what was counted is written before exit.
        # (Twisted's interface confuses mypy about `self`, hence the Any.)
        core: Any = self._clock  # Twisted's interfaces confuse mypy about `self`
        if hasattr(core, "addSystemEventTrigger"):  # the reactor (not a test's clock)
            core.addSystemEventTrigger("before", "shutdown", self._flush_at_shutdown)
        if self._notices is not None and self._notices.delivers_here:
            # Notices queued by workers, or left by a restart (main process only:
            # Synapse sends server notices from there).
            api.looping_background_call(
                self._notices.deliver, notices.DELIVER_MS, run_on_all_instances=True
            )
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
        return self._api.run_as_background_process(
            "tchap_guard_flush", self._ledger.flush
        )

    async def _exposure_warnings(self) -> list[str]:
        """What Synapse serves without an account, where the guard cannot count it."""
        api = self._api
        unauthenticated_media = None
        if (
            internals.authenticated_media_enabled(api)
            and api.should_run_background_tasks()
        ):
            try:
                unauthenticated_media = await internals.count_unauthenticated_media(api)
            except Exception:
                logger.exception("tchap_guard could not count unauthenticated media")
        settings = internals.exposure_settings(
            api, self._client_routes, unauthenticated_media
        )
        found = exposure_settings.warnings(settings)
        for warning in found:
            logger.warning("tchap_guard: %s", warning)
        return found

    def _step_up_warnings(self) -> list[str]:
        """Step-up methods a phished password passes, or that cannot work here."""
        directory = self._config.directory
        if directory is None:
            return []
        methods = directory.methods
        api = self._api
        warnings = []
        if Method.PASSWORD in methods:
            warnings.append(
                "directory.step_up_methods lists password: whoever holds an account's"
                " password (a phished one) can step up. Offer sso or email_code"
                " instead."
            )
        if Method.EMAIL_CODE in methods:
            if not self._mailer.available:
                warnings.append(
                    "directory.step_up_methods lists email_code, but this homeserver"
                    " has no email settings (email.notif_from): no code can be sent,"
                    " so no account is offered email_code."
                )
            elif internals.users_may_add_addresses(api):
                warnings.append(
                    "directory.step_up_methods lists email_code, and users may add"
                    " email addresses themselves (enable_3pid_changes): whoever holds"
                    " an account's password can add their own address and receive its"
                    " codes. Set enable_3pid_changes: false."
                )
        return warnings

    def _notice_warnings(self) -> list[str]:
        """Owner notices that cannot reach anyone here."""
        config = self._config.owner_notices
        if config is None:
            return []
        warnings = []
        if config.email and not self._mailer.available:
            warnings.append(
                "owner_notices.email is on, but this homeserver has no email settings"
                " (email.notif_from): owners are not told by email."
            )
        if config.server_notice and not internals.server_notices_configured(self._api):
            warnings.append(
                "owner_notices.server_notice is on, but server_notices is not"
                " configured: owners are not told in their Matrix client."
            )
        return warnings

    async def _prune(self) -> None:
        """Delete rows no window or retention needs (at start-up, then every 10 min)."""
        now = self._context.now()
        longest = max(control.longest_window_ms for control in self._controls)
        codes = EmailCodeConfig()
        if self._config.directory is not None:
            codes = self._config.directory.email_code
        # A bucket counts until a sixtieth of its window after the window's span.
        removed = await self._context.store.prune(
            counts_before=now - longest - longest // 60 - 1,
            history_before=now - self._config.retention_ms,
            codes_before=now - max(codes.valid_for_ms, codes.max_sent.window_ms),
        )
        if removed:
            logger.info("tchap_guard pruned %d old rows", removed)
