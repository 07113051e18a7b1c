"""Running the guard's transactions on Synapse's database, and knowing when they fail.

Every query of the guard goes through `Database.run`. It waits, briefly, for the
tables to be prepared at start-up, takes a slot in its lane (see `lanes`: how many
connections the guard may hold, and how long a request waits), bounds each statement
in time, runs the transaction at READ COMMITTED (see
`_synapse_internals.run_interaction`), and turns the database's own errors into
`StoreUnavailable`: the one exception the gates treat as "the guard's tables cannot
answer" (and apply `on_error` to). Anything else is a bug and propagates as one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from synapse.module_api import LoggingTransaction, ModuleApi

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.inputs import one_line
from synapse_tchap_guard.readiness import Readiness
from synapse_tchap_guard.store.lanes import Abandoned, Lanes, Ticket, TimedOut
from synapse_tchap_guard.timing import HookTimes

P = ParamSpec("P")
T = TypeVar("T")


class StoreUnavailable(Exception):
    """The guard's tables could not answer (database error, or not prepared yet).

    Its text is one line (see `inputs.one_line`): a database's error may quote a
    value a user sent, and it is logged as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class StoreTimedOut(StoreUnavailable):
    """The guard's tables did not answer in time (a stall, not the data's fault)."""


class Database:
    def __init__(
        self, api: ModuleApi, node: str, readiness: Readiness, lanes: Lanes
    ) -> None:
        self._api = api
        self.node = node  # the Synapse process, as written with each line
        self.readiness = readiness
        self.lanes = lanes
        self._errors = internals.database_errors(api)
        self.times = HookTimes(api.server_name)

    async def run(
        self,
        desc: str,
        func: Callable[Concatenate[LoggingTransaction, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run `func(txn, *args)` in one transaction (it may run several times)."""
        if not self.readiness.ready and not await self.readiness.wait():
            raise StoreUnavailable("the guard's tables are not ready")

        def bound(txn: LoggingTransaction) -> T:
            return func(txn, *args, **kwargs)

        started = time.perf_counter()
        try:
            return await self._in_lane(desc, bound, timed=True)
        finally:
            self.times.observe(f"db:{desc}", time.perf_counter() - started)

    async def migrate(self, desc: str, func: Callable[[LoggingTransaction], T]) -> T:
        """`run`, without waiting for the tables (it prepares them), nor a time limit
        on its statements (a migration takes what it takes)."""
        return await self._in_lane(desc, func, timed=False)

    async def _in_lane(
        self, desc: str, func: Callable[[LoggingTransaction], T], timed: bool
    ) -> T:
        lane = self.lanes.current()
        timeout = lane.limits.statement_timeout_ms if timed else None

        async def transaction(ticket: Ticket) -> T:
            def txn_func(txn: LoggingTransaction) -> T:
                if ticket.abandoned:  # queued behind Synapse's own work meanwhile
                    raise Abandoned()
                with internals.statement_timeout(txn, timeout):
                    return func(txn)

            return await self.run_now(desc, txn_func)

        try:
            return await lane.run(transaction)
        except TimedOut as error:
            raise StoreTimedOut(f"the guard's tables did not answer: {error}") from None

    async def run_now(self, desc: str, func: Callable[[LoggingTransaction], T]) -> T:
        """Run one transaction now, whatever the lanes."""
        try:
            return await internals.run_interaction(
                self._api, f"tchap_guard_{desc}", func
            )
        except internals.StatementCancelled as error:
            raise StoreTimedOut(str(error)) from error
        except self._errors as error:
            raise StoreUnavailable(str(error)) from error


def error_text(error: Exception) -> str:
    """An error as one line of a log or an event, escaped once."""
    text = str(error) if isinstance(error, StoreUnavailable) else one_line(error)
    return f"{type(error).__name__}: {text}"
