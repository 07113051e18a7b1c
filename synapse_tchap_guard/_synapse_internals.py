"""Every private Synapse internal the guard uses, and the start-up check that they exist.

The public module API has no way to end an account's sessions, to know which request
is being authenticated, to see the bytes of a media response, to re-authenticate a
user, to pick a transaction's isolation level, to bound a statement's time, or to
tell the database engines apart.
Those few touches live here, and `check_internals` runs when the module loads so that
a Synapse upgrade that moves them stops the homeserver at start-up with a clear
message instead of failing on a user's request. The integration tests exercise each
of them on the pinned Synapse.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard, TypeVar

import attr
import synapse.media._base as media_base
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from synapse.api.errors import InteractiveAuthIncompleteError
from synapse.logging.context import (
    ContextRequest,
    PreserveLoggingContext,
    current_context,
)
from synapse.module_api import LoggingTransaction, ModuleApi, Requester, SynapseRequest
from synapse.storage.engines import PostgresEngine
from synapse.storage.engines._base import IsolationLevel
from twisted.internet import defer
from twisted.web.server import Request

from synapse_tchap_guard.audit import RequestInfo

T = TypeVar("T")

# The Synapse versions this module is tested against (the oldest and the newest, by
# scripts/test); setup.cfg's test extra names the same range.
SUPPORTED_SYNAPSE = SpecifierSet(">=1.142.0,<1.164")


class UnsupportedSynapse(RuntimeError):
    """Raised at start-up when this Synapse lacks something the guard relies on."""


def check_internals(api: ModuleApi) -> None:
    """Fail loudly, at start-up, if this Synapse is not one the guard can run on."""
    # Not synapse.__version__, which carries git details when run from a checkout.
    version = Version(importlib.metadata.version("matrix-synapse"))
    if version not in SUPPORTED_SYNAPSE:
        raise UnsupportedSynapse(
            f"synapse_tchap_guard supports Synapse {SUPPORTED_SYNAPSE}, "
            f"this is {version}: install a release of the module made for it"
        )
    lookups: dict[str, Callable[[], Any]] = {
        "ModuleApi._device_handler.delete_all_devices_for_user": lambda: (
            api._device_handler.delete_all_devices_for_user
        ),
        "ModuleApi._auth_handler.delete_access_tokens_for_user": lambda: (
            api._auth_handler.delete_access_tokens_for_user
        ),
        "ModuleApi._store.db_pool.runInteraction": lambda: (
            api._store.db_pool.runInteraction
        ),
        "ModuleApi._store.database_engine.module.Error": lambda: (
            api._store.database_engine.module.Error
        ),
        "synapse.media._base.finish_request": lambda: (
            media_base.finish_request  # type: ignore[attr-defined]
        ),
        "SynapseRequest.get_request_id": lambda: SynapseRequest.get_request_id,
        "ModuleApi._auth_handler.validate_user_via_ui_auth": lambda: (
            api._auth_handler.validate_user_via_ui_auth
        ),
    }
    missing = [name for name, lookup in lookups.items() if not _exists(lookup)]
    config = getattr(getattr(api, "_hs", None), "config", None)
    for section, key in (("media", "enable_authenticated_media"), ("mas", "enabled")):
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


def wake(waiter: defer.Deferred[Any], result: Any = None) -> None:
    """Fire a Deferred others wait on, keeping each side's logging context, as Synapse's
    own `ObservableDeferred` does (its waiters use `make_deferred_yieldable`)."""
    if not waiter.called:
        with PreserveLoggingContext():
            waiter.callback(result)


def wake_with(waiter: defer.Deferred[Any], error: Exception) -> None:
    """`wake`, raising `error` in the waiter."""
    if not waiter.called:
        with PreserveLoggingContext():
            waiter.errback(error)


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


async def reauthenticate(
    api: ModuleApi,
    requester: Requester,
    request: SynapseRequest,
    body: dict[str, Any],
    description: str,
) -> None:
    """Run User-Interactive Auth for the requester, as Synapse does before deleting a
    device. Raises `InteractiveAuthIncomplete` (answer 401 with its `result`) until
    the client has completed a flow: password, or SSO through Synapse's fallback page.
    """
    await api._auth_handler.validate_user_via_ui_auth(
        requester, request, body, description, can_skip_ui_auth=False
    )


# --- sessions --------------------------------------------------------------------


async def end_all_sessions(api: ModuleApi, user_id: str) -> None:
    """Log the account out everywhere, exactly as `POST /logout/all` does.

    `ModuleApi.invalidate_access_token` cannot serve: it needs every token, and it is
    broken on Synapse 1.163 (it calls `.get` on a Requester).
    """
    await api._device_handler.delete_all_devices_for_user(user_id)
    await api._auth_handler.delete_access_tokens_for_user(user_id)


# --- media responses ---------------------------------------------------------------

MediaFinished = Callable[[str, int, int], None]


def watch_media_responses(on_finished: MediaFinished) -> None:
    """Call `on_finished(request_id, status, body_bytes)` after each media response.

    Synapse offers modules no hook on downloads. Every media body it writes (downloads
    and thumbnails, local and remote, stored or generated) ends with
    `synapse.media._base.finish_request`, looked up there at call time; wrapping it
    gives the bytes really sent (`Request.sentLength`), after the client has them.
    """
    original = media_base.finish_request  # type: ignore[attr-defined]

    def finish_request(request: Request) -> None:
        original(request)
        if isinstance(request, SynapseRequest):
            on_finished(request.get_request_id(), request.code, request.sentLength)

    media_base.finish_request = finish_request  # type: ignore[attr-defined]


def authenticated_media_enabled(api: ModuleApi) -> bool:
    """Whether new media is served only to requests that carry an account."""
    return bool(api._hs.config.media.enable_authenticated_media)


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
