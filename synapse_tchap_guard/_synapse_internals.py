"""Every private Synapse internal the guard uses, and the start-up check that they exist.

The public module API has no way to end an account's sessions, to know which request
is being authenticated, to see how a response ended and what it sent, to
re-authenticate a user (and know how they can), to know whether the homeserver can
send mail or server notices, to send a server notice, to pick a transaction's
isolation level, to bound a statement's time, to tell the database engines apart, or
to share counts between processes through Synapse's Redis.
Those few touches live here, and `check_internals` runs when the module loads so that
a Synapse upgrade that moves them stops the homeserver at start-up with a clear
message instead of failing on a user's request. The integration tests exercise each
of them on the pinned Synapse.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import inspect
import pkgutil
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence, Sized
from typing import Any, TypeGuard, TypeVar

import attr
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from synapse.api.errors import InteractiveAuthIncompleteError
from synapse.handlers.ui_auth import UIAuthSessionDataConstants
from synapse.http.servlet import RestServlet
from synapse.logging.context import (
    ContextRequest,
    current_context,
)
from synapse.module_api import (
    LoggingTransaction,
    ModuleApi,
    Requester,
    SynapseRequest,
    UserID,
    make_deferred_yieldable,
)
from synapse.server_notices.server_notices_manager import ServerNoticesManager
from synapse.storage.engines import PostgresEngine
from synapse.storage.engines._base import IsolationLevel
from twisted.internet import reactor

from synapse_tchap_guard.exposure_settings import ExposureSettings
from synapse_tchap_guard.inputs import RequestInfo
from synapse_tchap_guard.routes import ClientRoute

T = TypeVar("T")

# The Synapse versions this module is tested against (the oldest and the newest, by
# scripts/test); setup.cfg's test extra names the same range.
SUPPORTED_SYNAPSE = SpecifierSet(">=1.142.0,<1.164")
_OLDEST = "1.142.0"


class UnsupportedSynapse(RuntimeError):
    """Raised at start-up when this Synapse lacks something the guard relies on."""


def check_version(version: Version) -> str | None:
    """Refuse a Synapse older than the supported range; a newer one runs (Synapse
    ships every two weeks, and a homeserver must not stay down, or unpatched, until
    the guard catches up) with the warning returned, once `check_internals` found
    every internal the guard uses."""
    if version < Version(_OLDEST):
        raise UnsupportedSynapse(
            f"synapse_tchap_guard supports Synapse {SUPPORTED_SYNAPSE}, this is"
            f" {version}: upgrade Synapse, or install an older release of the module"
        )
    if version in SUPPORTED_SYNAPSE:
        return None
    return (
        f"Synapse {version} is newer than the releases this module was tested with"
        f" ({SUPPORTED_SYNAPSE}); every internal it uses is present, so it runs:"
        " install a release of the module tested with it when there is one"
    )


def synapse_version() -> Version:
    # Not synapse.__version__, which carries git details when run from a checkout.
    return Version(importlib.metadata.version("matrix-synapse"))


def check_internals(api: ModuleApi) -> str | None:
    """Fail loudly, at start-up, if this Synapse is not one the guard can run on
    (naming what is missing); returns a warning for a Synapse newer than tested."""
    warning = check_version(synapse_version())
    lookups: dict[str, Callable[[], Any]] = {
        "ModuleApi._device_handler.delete_devices": lambda: (
            api._device_handler.delete_devices
        ),
        "ModuleApi._store.get_devices_by_user": lambda: api._store.get_devices_by_user,
        "ModuleApi._store.get_rooms_for_user": lambda: api._store.get_rooms_for_user,
        "ModuleApi._store.get_number_joined_users_in_room": lambda: (
            api._store.get_number_joined_users_in_room
        ),
        "ModuleApi._store.db_pool.runInteraction": lambda: (
            api._store.db_pool.runInteraction
        ),
        "ModuleApi._store.database_engine.module.Error": lambda: (
            api._store.database_engine.module.Error
        ),
        "SynapseRequest._finished_processing": lambda: (
            SynapseRequest._finished_processing
        ),
        "SynapseRequest.get_request_id": lambda: SynapseRequest.get_request_id,
        "ModuleApi._auth_handler.check_ui_auth": lambda: (
            api._auth_handler.check_ui_auth
        ),
        "ModuleApi._hs.get_outbound_redis_connection": lambda: (
            api._hs.get_outbound_redis_connection
        ),
        "ModuleApi._hs.get_search_handler().search": lambda: (
            api._hs.get_search_handler().search
        ),
        "ModuleApi._hs.get_user_directory_handler().search_users": lambda: (
            api._hs.get_user_directory_handler().search_users
        ),
        "ModuleApi._auth_handler._get_available_ui_auth_types": lambda: (
            api._auth_handler._get_available_ui_auth_types
        ),
        "ModuleApi._hs.get_server_notices_manager": lambda: (
            api._hs.get_server_notices_manager
        ),
        "ServerNoticesManager.send_notice": lambda: ServerNoticesManager.send_notice,
    }
    missing = [name for name, lookup in lookups.items() if not _exists(lookup)]
    config = getattr(getattr(api, "_hs", None), "config", None)
    for section, key in (
        ("media", "enable_authenticated_media"),
        ("mas", "enabled"),
        ("redis", "redis_enabled"),
        ("server", "require_auth_for_profile_requests"),
        ("server", "allow_public_rooms_without_auth"),
        ("registration", "allow_guest_access"),
        ("registration", "enable_registration"),
        ("email", "email_notif_from"),
        ("servernotices", "server_notices_mxid"),
        ("registration", "enable_3pid_changes"),
    ):
        if not hasattr(getattr(config, section, None), key):
            missing.append(f"ModuleApi._hs.config.{section}.{key}")
    if "txn" not in getattr(LoggingTransaction, "__slots__", ()):
        missing.append("LoggingTransaction.txn")  # the cursor, for SQLite's timeout
    fields = {field.name for field in attr.fields(ContextRequest)}
    missing += [
        f"ContextRequest.{name}"
        for name in (
            "requester",
            "url",
            "ip_address",
            "user_agent",
            "method",
            "request_id",
        )
        if name not in fields
    ]
    if missing:
        raise UnsupportedSynapse(
            "synapse_tchap_guard cannot find these Synapse internals: "
            + ", ".join(missing)
        )
    return warning


def _exists(lookup: Callable[[], Any]) -> bool:
    try:
        return callable(lookup())
    except AttributeError:
        return False


# --- the request being served ----------------------------------------------------


def current_request() -> ContextRequest | None:
    """The HTTP request this code runs for, if any (pushers and timers have none)."""
    return current_context().request


def authenticating(request: ContextRequest | None) -> TypeGuard[ContextRequest]:
    """Whether Synapse is checking this request's own access token right now.

    Synapse calls the account-validity hook while authenticating a request, before it
    records who the requester is; it also calls it for other accounts (account status
    lookups, pushers), where the requester is already known or there is no request.
    """
    return request is not None and request.requester is None


def request_info(request: ContextRequest | None) -> RequestInfo | None:
    if request is None:
        return None
    path = request.url.split("?", 1)[0] if request.url else None
    return RequestInfo(
        ip=request.ip_address or None,
        user_agent=request.user_agent or None,
        path=path,
        method=request.method or None,
        request_id=request.request_id or None,
    )


# --- authentication ------------------------------------------------------------

InteractiveAuthIncomplete = InteractiveAuthIncompleteError


def auth_delegated(api: ModuleApi) -> bool:
    """Whether Matrix Authentication Service authenticates requests instead of Synapse."""
    return bool(api._hs.config.mas.enabled)


async def user_interactive_auth(
    api: ModuleApi,
    user_id: str,
    request: SynapseRequest,
    body: dict[str, Any],
    stages: list[str],
    description: str,
) -> dict[str, Any]:
    """Run Synapse's User-Interactive Auth with the flows the guard offers (one stage
    each), as Synapse does before deleting a device, but never with a stage the guard
    does not offer. Returns the completed stages, each with the user it proved.

    Raises `InteractiveAuthIncomplete` (answer 401 with its `result`) until the client
    has completed a flow: password, or SSO through Synapse's fallback page. The
    session Synapse keeps is bound to this URI and method, and to `user_id` (whom
    Synapse's SSO fallback page checks the signed-in identity against).
    """
    flows = [[stage] for stage in stages]
    creds, _, _ = await api._auth_handler.check_ui_auth(
        flows,
        request,
        body,
        description,
        lambda: {UIAuthSessionDataConstants.REQUEST_USER_ID: user_id},
    )
    return dict(creds)


async def reauthentication_types(api: ModuleApi, user_id: str) -> set[str]:
    """The UIA stages this account can complete, as Synapse's own UIA offers them:
    `m.login.password` if it has a password and password login is on, `m.login.sso`
    if it is linked to an identity of the homeserver's SSO provider."""
    types = await api._auth_handler._get_available_ui_auth_types(
        UserID.from_string(user_id)
    )
    return set(types)


def mail_configured(api: ModuleApi) -> bool:
    """Whether the homeserver can send mail (`email.notif_from` set, as Synapse's
    mailer needs it for the sender)."""
    return api._hs.config.email.email_notif_from is not None


def users_may_add_addresses(api: ModuleApi) -> bool:
    """Whether users may add email addresses to their account themselves."""
    return bool(api._hs.config.registration.enable_3pid_changes)


def server_notices_configured(api: ModuleApi) -> bool:
    return api._hs.config.servernotices.server_notices_mxid is not None


async def send_server_notice(
    api: ModuleApi, user_id: str, content: dict[str, Any]
) -> str:
    """Post a message in the account's server notices room (created, and the account
    invited, if need be); returns the event id. Only the main process can: Synapse
    refuses to build the server notices manager on a worker."""
    manager = api._hs.get_server_notices_manager()
    event = await manager.send_notice(user_id, content)
    return str(event.event_id)


# --- sessions --------------------------------------------------------------------


async def joined_rooms(api: ModuleApi, user_id: str) -> frozenset[str]:
    """The rooms the account is joined to (Synapse keeps them cached)."""
    store: Any = api._store  # its cached methods confuse mypy
    rooms: frozenset[str] = await store.get_rooms_for_user(user_id)
    return rooms


async def joined_member_count(api: ModuleApi, room_id: str) -> int:
    """How many accounts a room has joined, as this server knows it (cached)."""
    store: Any = api._store  # its cached methods confuse mypy
    count: int = await store.get_number_joined_users_in_room(room_id)
    return count


async def sessions_of(api: ModuleApi, user_id: str) -> list[str]:
    """The account's sessions (devices) now."""
    devices: dict[str, Any] = await api._store.get_devices_by_user(user_id)
    return list(devices)


async def end_sessions(api: ModuleApi, user_id: str, devices: list[str]) -> None:
    """Log these sessions of the account out, as `POST /logout/all` does for all:
    their devices and access tokens deleted.

    `ModuleApi.invalidate_access_token` cannot serve: it needs every token, and it is
    broken on Synapse 1.163 (it calls `.get` on a Requester).
    """
    await api._device_handler.delete_devices(user_id, devices)


# --- client routes -------------------------------------------------------------------


class _Recorder:
    """Stands in for Synapse's HTTP server while a servlet registers its routes."""

    def __init__(self) -> None:
        self.routes: list[ClientRoute] = []

    def register_paths(
        self, method: str, patterns: Any, callback: Any, servlet: str, *args: Any
    ) -> None:
        self.routes.extend(
            ClientRoute(method, pattern, servlet) for pattern in patterns
        )


def client_routes() -> list[ClientRoute]:
    """Every route of Synapse's client API, with the very patterns Synapse matches.

    Each servlet class of `synapse.rest.client` registers its routes into a recorder
    (without running its `__init__`, which needs a homeserver): the same code Synapse
    runs at start-up, so every prefix it serves (`r0`, `v3`, `unstable`, `api/v1`,
    `v1`, and whatever a newer release adds) is known. Routes switched on by
    experimental settings in a servlet's `__init__` are not among them.
    """
    import synapse.rest.client as client

    routes: list[ClientRoute] = []
    for module_info in pkgutil.walk_packages(client.__path__, client.__name__ + "."):
        module = importlib.import_module(module_info.name)
        for servlet in vars(module).values():
            if not (
                inspect.isclass(servlet)
                and issubclass(servlet, RestServlet)
                and servlet.__module__ == module.__name__
            ):
                continue
            recorder = _Recorder()
            try:
                servlet.register(object.__new__(servlet), recorder)
            except Exception:
                continue  # an abstract servlet (see `check_routes` for the ones needed)
            routes += recorder.routes
    return routes


def check_routes(found: set[str], needed: Collection[str]) -> None:
    """Fail loudly, at start-up, if a servlet the guard counts is gone from Synapse."""
    missing = sorted(set(needed) - found)
    if missing:
        raise UnsupportedSynapse(
            "synapse_tchap_guard cannot find these Synapse client servlets, whose"
            " requests it counts: " + ", ".join(missing)
        )


# --- searches ----------------------------------------------------------------------

OnSearch = Callable[[str, Any], Awaitable[None]]


def watch_searches(api: ModuleApi, on_search: OnSearch) -> None:
    """Await `on_search(user_id, body)` before Synapse runs each `POST /search` (it
    may raise the client's error). The size of a search is in its body, which the
    per-request check cannot read; Synapse's search handler gets it parsed."""
    handler = api._hs.get_search_handler()
    original = handler.search

    async def search(
        requester: Requester, content: Any, batch: str | None = None
    ) -> Any:
        await on_search(requester.user.to_string(), content)
        return await original(requester, content, batch)

    handler.search = search  # type: ignore[method-assign]


OnPeopleFound = Callable[[str, str, list[Any]], Awaitable[list[Any]]]


def watch_directory_searches(api: ModuleApi, on_found: OnPeopleFound) -> None:
    """Let `on_found(user_id, search_term, results)` choose which of a user directory
    search's results are shown. The spam checker's per-result callback never sees the
    term, nor the page as a whole; Synapse's directory handler has both."""
    handler = api._hs.get_user_directory_handler()
    original = handler.search_users

    async def search_users(user_id: str, search_term: str, limit: int) -> Any:
        results = await original(user_id, search_term, limit)
        results["results"] = await on_found(user_id, search_term, results["results"])
        return results

    handler.search_users = search_users  # type: ignore[method-assign]


# --- responses ----------------------------------------------------------------------

ResponseFinished = Callable[[str, int, int], None]


def watch_responses(on_finished: ResponseFinished, waiting: Sized) -> None:
    """Call `on_finished(request_id, status, body_bytes)` once each response is over,
    while anything is `waiting` for one (most responses cost a length then).

    Synapse offers modules no hook after a response. Every HTTP request Synapse serves
    ends in `SynapseRequest._finished_processing` (sent in full, or the client gone),
    where the status and the bytes really sent are known: wrapping it tells the guard
    whether what it counted was served (a join that failed, a download that did not
    arrive give back what they were counted) and how many bytes a download sent.
    """
    _watched[:] = [(on_finished, waiting)]  # one guard a process (a test's, the last)
    if _watched_original:
        return
    _watched_original.append(SynapseRequest._finished_processing)

    def finished_processing(request: SynapseRequest) -> None:
        _watched_original[0](request)
        for listener, awaited in _watched:
            if awaited:
                listener(
                    request.get_request_id(), int(request.code), request.sentLength
                )

    SynapseRequest._finished_processing = finished_processing  # type: ignore[method-assign,assignment]


_watched: list[tuple[ResponseFinished, Sized]] = []
_watched_original: list[Callable[[SynapseRequest], None]] = []


def authenticated_media_enabled(api: ModuleApi) -> bool:
    """Whether new media is served only to requests that carry an account."""
    return bool(api._hs.config.media.enable_authenticated_media)


def exposure_settings(
    api: ModuleApi, routes: Sequence[ClientRoute], unauthenticated_media: int | None
) -> ExposureSettings:
    """The settings that leave a route open without an account (`exposure_settings`)."""
    config = api._hs.config
    # Newer releases serve room summaries (MSC3266) always, at a stable path, a token
    # optional; older ones only behind an experimental setting.
    summaries = any(
        route.servlet == "RoomSummaryRestServlet"
        and "room_summary" in route.pattern.pattern
        for route in routes
    ) or bool(getattr(config.experimental, "msc3266_enabled", False))
    return ExposureSettings(
        profiles_need_an_account=bool(config.server.require_auth_for_profile_requests),
        public_rooms_need_an_account=not config.server.allow_public_rooms_without_auth,
        guests_allowed=bool(config.registration.allow_guest_access),
        open_registration=bool(config.registration.enable_registration),
        room_summaries_open=summaries,
        authenticated_media=authenticated_media_enabled(api),
        unauthenticated_media_files=unauthenticated_media,
    )


async def count_unauthenticated_media(api: ModuleApi) -> int:
    """Media that the legacy `/_matrix/media/v3/download` still serves to anyone.

    Synapse marks each file `authenticated` when it is stored while authenticated
    media is on; the others stay reachable without an account.
    """

    def count_txn(txn: LoggingTransaction) -> int:
        total = 0
        for table in ("local_media_repository", "remote_media_cache"):
            txn.execute(f"SELECT COUNT(*) FROM {table} WHERE NOT authenticated")
            row = txn.fetchone()
            total += int(row[0]) if row else 0
        return total

    return await run_interaction(
        api, "tchap_guard_count_unauthenticated_media", count_txn
    )


# --- database --------------------------------------------------------------------


async def run_interaction(
    api: ModuleApi, desc: str, func: Callable[..., T], *args: Any
) -> T:
    """`ModuleApi.run_db_interaction`, but at READ COMMITTED on PostgreSQL.

    Every judgement of an account first writes that account's row. At Synapse's
    default REPEATABLE READ, concurrent judgements of one account abort with
    serialisation failures and are retried at most five times, so a burst of requests
    exhausts the retries and ends up decided by `on_error`. At READ COMMITTED the row
    lock makes them wait their turn instead, and each one sees what the previous one
    committed. (SQLite runs one transaction at a time anyway.)
    """
    result: T = await api._store.db_pool.runInteraction(
        desc, func, *args, isolation_level=IsolationLevel.READ_COMMITTED
    )
    return result


def database_errors(api: ModuleApi) -> tuple[type[Exception], ...]:
    """The exceptions by which the database says it cannot answer: the DB-API `Error`
    of the engine's driver (sqlite3 or psycopg2), as Synapse's own retries know it."""
    engine: Any = api._store.database_engine
    return (engine.module.Error,)


# --- Redis ---------------------------------------------------------------------------

REDIS_TIMEOUT_S = 1.0


def redis_eval(
    api: ModuleApi,
) -> Callable[[str, Sequence[str], Sequence[str]], Awaitable[Any]] | None:
    """Run a Lua script on Synapse's own Redis (the one workers replicate through),
    or None when this homeserver has no Redis (one process: nothing to share)."""
    if not api._hs.config.redis.redis_enabled:
        return None
    connection = api._hs.get_outbound_redis_connection()
    clock: Any = reactor

    async def run(script: str, keys: Sequence[str], args: Sequence[str]) -> Any:
        deferred = connection.eval(script, list(keys), list(args))
        deferred.addTimeout(REDIS_TIMEOUT_S, clock)
        return await make_deferred_yieldable(deferred)

    return run


def is_postgres(txn: LoggingTransaction) -> bool:
    engine: Any = txn.database_engine
    return isinstance(engine, PostgresEngine)


class StatementCancelled(Exception):
    """A statement ran past its time and the database cancelled it.

    Not a database error on purpose: Synapse retries a transaction that fails with
    the driver's `OperationalError` (which PostgreSQL's cancellation is) up to five
    times, and a cancelled statement must not wait five times as long.
    """


# PostgreSQL's SQLSTATE for a statement cancelled by `statement_timeout`.
_QUERY_CANCELED = "57014"
# How many SQLite virtual machine instructions between two looks at the clock.
_SQLITE_CHECK_EVERY = 1000


@contextlib.contextmanager
def statement_timeout(txn: LoggingTransaction, ms: int | None) -> Iterator[None]:
    """Within the block, each statement of the transaction is cancelled after `ms`
    (raising `StatementCancelled`): on PostgreSQL by `SET LOCAL statement_timeout`,
    which also bounds waiting for a lock; on SQLite by a progress handler on the
    connection (`txn.txn` is the DB-API cursor), removed when the block ends."""
    if ms is None:
        yield
        return
    if is_postgres(txn):
        txn.execute(f"SET LOCAL statement_timeout = {int(ms)}")
        try:
            yield
        except Exception as error:
            if getattr(error, "pgcode", None) == _QUERY_CANCELED:
                raise StatementCancelled(str(error)) from error
            raise
        return
    cursor: Any = txn.txn  # sqlite3's
    connection = cursor.connection
    deadline = time.monotonic() + ms / 1000
    tripped = []

    def past_deadline() -> bool:
        if time.monotonic() > deadline:
            tripped.append(True)
            return True  # SQLite interrupts the statement
        return False

    connection.set_progress_handler(past_deadline, _SQLITE_CHECK_EVERY)
    try:
        yield
    except Exception as error:
        if tripped:
            raise StatementCancelled(str(error)) from error
        raise
    finally:
        connection.set_progress_handler(None, 0)
