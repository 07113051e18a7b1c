"""Everything the guard keeps, in Synapse's own database: one module per concern.

`Database` runs the transactions and says when the tables cannot answer; `schema`
creates them; the stores each own a table's statements. Transaction functions may
run several times (Synapse retries on serialisation failures), so they only read and
write the database; logging happens after commit.
"""

from __future__ import annotations

from synapse_tchap_guard.store.accounts import AccountStore
from synapse_tchap_guard.store.audit import AuditStore
from synapse_tchap_guard.store.blocks import BlockStore
from synapse_tchap_guard.store.counts import CountStore
from synapse_tchap_guard.store.database import (
    Database,
    StoreTimedOut,
    StoreUnavailable,
)
from synapse_tchap_guard.store.notices import NoticeStore
from synapse_tchap_guard.store.pruning import prune
from synapse_tchap_guard.store.schema import prepare
from synapse_tchap_guard.store.step_up_codes import StepUpCodeStore

__all__ = ["GuardStore", "StoreTimedOut", "StoreUnavailable"]


class GuardStore:
    def __init__(self, database: Database) -> None:
        self.database = database
        self.accounts = AccountStore(database)
        self.counts = CountStore(database)
        self.blocks = BlockStore(database)
        self.audit = AuditStore(database)
        self.step_up_codes = StepUpCodeStore(database)
        self.notices = NoticeStore(database)

    async def prepare(self) -> int:
        return await prepare(self.database)

    async def prune(
        self, counts_before: int, history_before: int, codes_before: int
    ) -> int:
        return await prune(self.database, counts_before, history_before, codes_before)
