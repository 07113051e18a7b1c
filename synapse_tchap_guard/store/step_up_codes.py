"""Step-up codes: issued per UIA session, kept hashed, redeemed once.

Every statement first writes the account's row (as every exact judgement does), so
that two processes issuing or redeeming codes of one account take turns: a code is
redeemed at most once, and the codes mailed in a window are counted exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attr
from synapse.module_api import LoggingTransaction

from synapse_tchap_guard.policy import Threshold
from synapse_tchap_guard.store.database import Database
from synapse_tchap_guard.store.statements import touch_account_txn

_COLUMNS = "id, code_hash, sent_ts, expires_ts, tries, used_ts"


@attr.frozen
class StoredCode:
    id: int
    code_hash: str
    sent_ts: int
    expires_ts: int
    tries: int
    used_ts: int | None

    def live(self, now: int, max_tries: int) -> bool:
        return self.used_ts is None and self.expires_ts > now and self.tries < max_tries


@attr.frozen
class Issued:
    """The session's live code: `new` if it was just issued (and must be mailed)."""

    code: StoredCode
    new: bool


@attr.frozen
class TooManySent:
    """The account was mailed `max_sent` codes in the window: wait `retry_after_ms`."""

    retry_after_ms: int


class Failure(str):
    """Why a code was refused, as the SIEM and the client read it."""


NO_CODE = Failure("no code was sent in this session: request one first")
USED = Failure("this code was already used: request a new one")
EXPIRED = Failure("this code has expired: request a new one")
TOO_MANY_TRIES = Failure("too many wrong codes: request a new one")
WRONG = Failure("wrong code")


@attr.frozen
class Redeemed:
    """What became of a code entered: redeemed (`failure` None), or why not."""

    failure: Failure | None
    tries_left: int = 0


class StepUpCodeStore:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def issue(
        self,
        user_id: str,
        session_id: str,
        code_hash: str,
        now: int,
        valid_for_ms: int,
        resend_after_ms: int,
        max_tries: int,
        max_sent: Threshold,
    ) -> Issued | TooManySent:
        """Issue a code for the session, unless one issued less than `resend_after_ms`
        ago is still live (a client asking twice), or `max_sent` would be passed."""

        def txn_func(txn: LoggingTransaction) -> Issued | TooManySent:
            touch_account_txn(txn, user_id, now)
            current = _latest_txn(txn, user_id, session_id)
            if (
                current is not None
                and current.live(now, max_tries)
                and current.sent_ts > now - resend_after_ms
            ):
                return Issued(current, new=False)
            txn.execute(
                "SELECT sent_ts FROM tchap_guard_step_up_codes"
                " WHERE user_id = ? AND sent_ts > ? ORDER BY sent_ts",
                (user_id, now - max_sent.window_ms),
            )
            sent = [int(ts) for (ts,) in txn.fetchall()]
            if len(sent) >= max_sent.max:
                # The wait until enough of them leave the window to mail one more.
                oldest_to_leave = sent[len(sent) - max_sent.max]
                return TooManySent(max(1, oldest_to_leave + max_sent.window_ms - now))
            txn.execute(
                "INSERT INTO tchap_guard_step_up_codes"
                " (user_id, session_id, code_hash, sent_ts, expires_ts)"
                f" VALUES (?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
                (user_id, session_id, code_hash, now, now + valid_for_ms),
            )
            row = txn.fetchone()
            assert row is not None
            return Issued(_code(row), new=True)

        return await self._db.run("issue_step_up_code", txn_func)

    async def redeem(
        self,
        user_id: str,
        session_id: str,
        matches: Callable[[str], bool],
        now: int,
        max_tries: int,
    ) -> Redeemed:
        """Check a code entered for the session against its latest code (`matches`
        compares a stored hash); a wrong one spends a try."""

        def txn_func(txn: LoggingTransaction) -> Redeemed:
            touch_account_txn(txn, user_id, now)
            code = _latest_txn(txn, user_id, session_id)
            if code is None:
                return Redeemed(NO_CODE)
            tries_left = max(0, max_tries - code.tries)
            if code.used_ts is not None:
                return Redeemed(USED)
            if code.expires_ts <= now:
                return Redeemed(EXPIRED)
            if tries_left == 0:
                return Redeemed(TOO_MANY_TRIES)
            if matches(code.code_hash):
                txn.execute(
                    "UPDATE tchap_guard_step_up_codes SET used_ts = ?"
                    " WHERE id = ? AND used_ts IS NULL",
                    (now, code.id),
                )
                return Redeemed(None) if txn.rowcount == 1 else Redeemed(USED)
            txn.execute(
                "UPDATE tchap_guard_step_up_codes SET tries = tries + 1 WHERE id = ?",
                (code.id,),
            )
            return Redeemed(WRONG, tries_left - 1)

        return await self._db.run("redeem_step_up_code", txn_func)


def _latest_txn(
    txn: LoggingTransaction, user_id: str, session_id: str
) -> StoredCode | None:
    txn.execute(
        f"SELECT {_COLUMNS} FROM tchap_guard_step_up_codes"
        " WHERE user_id = ? AND session_id = ? ORDER BY id DESC LIMIT 1",
        (user_id, session_id),
    )
    row = txn.fetchone()
    return _code(row) if row else None


def _code(row: Any) -> StoredCode:
    return StoredCode(*row)
