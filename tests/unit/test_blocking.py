"""Blocks on the store's real SQL and a fake clock: reloads, expiry, and the database
going out."""

from __future__ import annotations

import types
from collections.abc import Callable, Coroutine
from typing import Any, cast

from synapse.module_api import ModuleApi
from twisted.internet import defer, task

from synapse_tchap_guard.audit import AuditLog
from synapse_tchap_guard.block_registry import BlockRegistry
from synapse_tchap_guard.blocks import Blocking
from synapse_tchap_guard.config import GuardConfig
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.model import NewBlock
from synapse_tchap_guard.readiness import Readiness
from synapse_tchap_guard.store import GuardStore
from tests.unit.fakes import SqliteDatabase, new_store, run, shared_store

ALICE = "@alice:example.org"


def blocking(clock: task.Clock, store: Any) -> Blocking:
    api: Any = types.SimpleNamespace(
        public_baseurl="https://matrix.example.org/", server_name="example.org"
    )
    context = GuardContext(api, GuardConfig(), store, AuditLog("main"), clock)
    return Blocking(context, BlockRegistry(), Readiness(clock, "the blocks in force"))


def two_processes() -> tuple[task.Clock, GuardStore, Blocking, Blocking]:
    """A clock, the database, and the blocks of two processes on it (the first's
    loaded)."""
    clock = task.Clock()
    clock.advance(1_800_000_000)
    store = new_store(clock)
    here = blocking(clock, store)
    there = blocking(clock, shared_store(store, clock, "worker1"))
    run(here.load())
    return clock, store, here, there


def test_a_block_set_by_another_process_is_known_at_the_next_reload() -> None:
    clock, _, here, there = two_processes()
    now = int(clock.seconds() * 1000)
    run(
        there._context.store.blocks.open(
            ALICE,
            NewBlock("admin", "why", "@admin:example.org", now + 60_000),
            now,
            lambda b: [],
        )
    )
    assert here.registry.in_force(ALICE, now) is None
    run(here.reload())
    assert here.registry.in_force(ALICE, now) is not None
    clock.advance(61)
    assert here.registry.in_force(ALICE, int(clock.seconds() * 1000)) is None


def test_a_reload_reads_what_changed_lately_and_every_minute_all_in_force() -> None:
    clock, store, here, there = two_processes()
    database = store.database
    assert isinstance(database, SqliteDatabase)

    def now() -> int:
        return int(clock.seconds() * 1000)

    def reload() -> str:
        clock.advance(1)
        run(here.reload())
        return database.transactions[-1]

    # Blocked elsewhere, stamped by a clock 3 s behind this one's last read.
    late = now() - 3000
    new = NewBlock("admin", "why", "@admin:example.org", None)
    run(there._context.store.blocks.open(ALICE, new, late, lambda b: []))
    assert reload() == "blocks_changed"
    assert here.registry.in_force(ALICE, now()) is not None
    run(
        there._context.store.blocks.lift(
            ALICE, "@admin:example.org", "why", now(), lambda b: []
        )
    )
    assert reload() == "blocks_changed"
    assert here.registry.in_force(ALICE, now()) is None

    clock.advance(60)
    assert reload() == "blocks_in_force"
    assert reload() == "blocks_changed"


def test_while_the_database_is_out_the_last_known_blocks_stay_in_force() -> None:
    clock = task.Clock()
    clock.advance(1_800_000_000)
    store = new_store(clock)
    guard = blocking(clock, store)
    now = int(clock.seconds() * 1000)
    run(
        store.blocks.open(
            ALICE, NewBlock("admin", "why", "@a:x", None), now, lambda b: []
        )
    )
    run(guard.reload())
    assert isinstance(store.database, SqliteDatabase)
    store.database.out = True
    run(guard.reload())  # fails, and keeps what it knew
    assert guard.registry.in_force(ALICE, now) is not None


def test_an_expired_block_is_closed_once_and_reported() -> None:
    clock = task.Clock()
    clock.advance(1_800_000_000)
    store = new_store(clock)
    guard = blocking(clock, store)
    now = int(clock.seconds() * 1000)
    run(
        store.blocks.open(
            ALICE, NewBlock("admin", "why", "@a:x", now + 5000), now, lambda b: []
        )
    )
    run(guard.reload())
    clock.advance(5)
    run(guard.expire())
    run(guard.expire())
    assert isinstance(store.database, SqliteDatabase)
    actions = store.database.rows("SELECT action FROM tchap_guard_events")
    assert actions == [("block_expired",)]
    assert guard.registry.in_force(ALICE, int(clock.seconds() * 1000)) is None


class SessionsApi:
    """What ending sessions uses of the ModuleApi: the account's devices, and their
    deletion, which waits for the test."""

    public_baseurl = "https://matrix.example.org/"
    server_name = "example.org"

    def __init__(self) -> None:
        self.devices: dict[str, object] = {"OLD": {}}
        self.deleting: defer.Deferred[None] = defer.Deferred()
        self.deleted: list[str] = []
        self._store = types.SimpleNamespace(get_devices_by_user=self._devices)
        self._device_handler = types.SimpleNamespace(delete_devices=self._delete)

    async def _devices(self, user_id: str) -> dict[str, object]:
        return dict(self.devices)

    async def _delete(self, user_id: str, devices: list[str]) -> None:
        await self.deleting
        self.deleted += devices

    def run_as_background_process(
        self, desc: str, func: Callable[..., Coroutine[Any, Any, None]], *args: Any
    ) -> defer.Deferred[None]:
        return defer.ensureDeferred(func(*args))


def test_a_block_ends_the_sessions_it_found_never_one_opened_after_an_unblock() -> None:
    """Ending sessions takes a moment; an admin may lift the block meanwhile and the
    owner log in again: that new session is not among those the block ends."""
    clock = task.Clock()
    clock.advance(1_800_000_000)
    api = SessionsApi()
    context = GuardContext(
        cast(ModuleApi, api), GuardConfig(), new_store(clock), AuditLog("main"), clock
    )
    guard = Blocking(context, BlockRegistry(), Readiness(clock, "the blocks"))
    run(guard.block_by_admin(ALICE, "@admin:example.org", "why", 0, None))
    run(guard.unblock_by_admin(ALICE, "@admin:example.org", "ok", None))
    api.devices["NEW"] = {}  # the owner logs in again
    api.deleting.callback(None)  # the block's sweep ends
    assert api.deleted == ["OLD"]
    assert guard.registry.in_force(ALICE, int(clock.seconds() * 1000)) is None
