"""Running the guard's transactions on Synapse's database, and knowing when they fail.

Every query of the guard goes through `Database.run`. It waits, briefly, for the
tables to be prepared at start-up, runs the transaction at READ COMMITTED (see
`_synapse_internals.run_interaction`), and turns the database's own errors into
`StoreUnavailable`: the one exception the gates treat as "the guard's tables cannot
answer" (and apply `on_error` to). Anything else is a bug and propagates as one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from synapse.module_api import LoggingTransaction, ModuleApi

from synapse_tchap_guard import _synapse_internals as internals
from synapse_tchap_guard.readiness import Readiness

P = ParamSpec("P")
T = TypeVar("T")


class StoreUnavailable(Exception):
    """The guard's tables could not answer (database error, or not prepared yet)."""


class Database:
    def __init__(self, api: ModuleApi, node: str, readiness: Readiness) -> None:
        self._api = api
        self.node = node  # the Synapse process, as written with each line
        self.readiness = readiness
        self._errors = internals.database_errors(api)

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
        return await self.run_now(desc, func, *args, **kwargs)

    async def run_now(
        self,
        desc: str,
        func: Callable[Concatenate[LoggingTransaction, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`run`, without waiting for the tables (to prepare them)."""
        try:
            return await internals.run_interaction(
                self._api, f"tchap_guard_{desc}", func, *args, **kwargs
            )
        except self._errors as error:
            raise StoreUnavailable(str(error)) from error


def one(txn: LoggingTransaction) -> tuple[Any, ...]:
    """The row a statement is certain to return (an aggregate, a RETURNING clause)."""
    row = txn.fetchone()
    assert row is not None
    return tuple(row)
