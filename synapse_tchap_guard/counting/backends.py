"""Where the counts every process must agree on live: nowhere but here (one process),
or Synapse's own Redis (workers).

The contract, as `limits`' `acquire_entry`, is one atomic check-and-record:
`record(..., conditional=True)` records a change only if the caller had seen every
change before it, in one round trip. The rules themselves stay in Python: the caller
judges on its copy, records, and if another process counted meanwhile, gets what it
missed, judges again and records again (see `Ledger`). So a limit is never passed,
whatever the number of processes: exact, not eventually.

In Redis, an account is a hash of its counts, shaped as the windows are (a slot per
bucket, 64 per window: a newer bucket takes an older one's slot once it has left the
window, so the hash never outgrows the windows), its targets, and a version; and a
list of its latest changes, from which a process that missed a few catches up
without reading the whole account. Both live as long as the longest window after
the account's last change, and a missing account is seeded from the database. The
database stays the record: every process writes its own counts behind.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote, unquote

import attr

from synapse_tchap_guard.counting.layout import Layout, Shape
from synapse_tchap_guard.counting.records import Entry, StateKey
from synapse_tchap_guard.counting.state import AccountCounts
from synapse_tchap_guard.windows import width_of

logger = logging.getLogger(__name__)

SLOTS = 64  # per window in Redis: more than the 61 buckets a window holds
CHANGES_KEPT = 256  # the latest changes, for a process a few behind

# A change to record: whose state, cut how, and what.
Change = tuple[StateKey, Layout, Entry]


@attr.frozen
class Missed:
    """What the caller had not seen: the latest changes, or the whole account."""

    changes: tuple[tuple[str, str, Entry], ...] = ()  # (control, session, entry)
    whole: Mapping[str, str] | None = None


@attr.frozen
class Recorded:
    version: int
    missed: Missed = Missed()


@attr.frozen
class Behind:
    """Another process counted first: nothing was recorded."""

    version: int
    missed: Missed


class Missing:
    """The shared copy is gone (expired, dropped): seed it again."""


RECORDED_HERE = Recorded(0)  # one process: nothing to share


class Backend(Protocol):
    shared: bool  # whether other processes count the same accounts

    async def share(
        self, account: AccountCounts
    ) -> tuple[int, Mapping[str, str]] | None:
        """Seed the shared copy of an account just loaded from the database (unless
        another process did); returns it, with its version. None: nothing shared."""
        ...

    async def record(
        self, user_id: str, seen: int, changes: Sequence[Change], conditional: bool
    ) -> Recorded | Behind | Missing: ...


class LocalBackend:
    """One process: nothing can come between judging and recording."""

    shared = False

    async def share(
        self, account: AccountCounts
    ) -> tuple[int, Mapping[str, str]] | None:
        return None

    async def record(
        self, user_id: str, seen: int, changes: Sequence[Change], conditional: bool
    ) -> Recorded | Behind | Missing:
        return RECORDED_HERE


# Runs a script: (source, keys, args) -> Redis's reply.
Eval = Callable[[str, Sequence[str], Sequence[str]], Awaitable[Any]]

_RECORD = """
-- KEYS[1]: the account's counts (a hash), KEYS[2]: its latest changes (a list).
-- ARGV: the version the caller has seen, '1' to record only if it is the latest,
-- time to live (ms), changes kept, the change as the list keeps it, then operations
-- of three strings each:
--   'a' field "start,x,y": add to a bucket's slot (a newer start takes the slot
--       over; an older one has left the window and is ignored)
--   'm' field n: set to n if larger;  'u' field n: remove if at most n.
-- Returns {-1} without a shared copy (seed it), {0, version, missed} if the caller
-- is behind (nothing recorded), {1, version, missed} once recorded; missed is what
-- the caller has not seen: {'+', change...}, or {'*', field, value...}.
local version = redis.call('HGET', KEYS[1], 'v')
if not version then return {-1} end
version = tonumber(version)
local seen = tonumber(ARGV[1])
local function missed()
  if seen >= version then return {'+'} end
  local length = redis.call('LLEN', KEYS[2])
  if seen < version - length then
    local whole = redis.call('HGETALL', KEYS[1])
    table.insert(whole, 1, '*')
    return whole
  end
  local changes = redis.call('LRANGE', KEYS[2], seen - version + length, -1)
  table.insert(changes, 1, '+')
  return changes
end
if ARGV[2] == '1' and seen ~= version then return {0, version, missed()} end
local lacked = missed()
local pattern = '^(-?%d+),(-?%d+),(-?%d+)$'
for i = 6, #ARGV, 3 do
  local kind, field, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if kind == 'a' then
    local start, x, y = string.match(value, pattern)
    start, x, y = tonumber(start), tonumber(x), tonumber(y)
    local current = redis.call('HGET', KEYS[1], field)
    if current then
      local s, cx, cy = string.match(current, pattern)
      s = tonumber(s)
      if s == start then
        x, y = x + tonumber(cx), y + tonumber(cy)
      elseif s > start then
        start = nil
      end
    end
    if start then
      redis.call('HSET', KEYS[1], field, string.format('%d,%d,%d', start, x, y))
    end
  elseif kind == 'm' then
    local current = tonumber(redis.call('HGET', KEYS[1], field) or '-1')
    if tonumber(value) > current then redis.call('HSET', KEYS[1], field, value) end
  elseif kind == 'u' then
    local current = redis.call('HGET', KEYS[1], field)
    if current and tonumber(current) <= tonumber(value) then
      redis.call('HDEL', KEYS[1], field)
    end
  end
end
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
version = version + 1
redis.call('HSET', KEYS[1], 'v', version)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {1, version, lacked}
"""

_SEED = """
-- KEYS: the account's counts, its latest changes. ARGV: time to live (ms), then
-- field, value pairs from the database. Seeds a missing copy; returns the copy as
-- it is (another process may have seeded it first): field, value...
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
  redis.call('HSET', KEYS[1], 'v', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
"""


class RedisBackend:
    shared = True

    def __init__(self, run: Eval, time_to_live_ms: int) -> None:
        self._run = run
        self._ttl = str(time_to_live_ms)

    @staticmethod
    def keys(user_id: str) -> list[str]:
        # One hash tag: both keys live on the same node of a Redis cluster.
        tag = "{" + json.dumps([user_id]) + "}"
        return [f"tchap_guard:{tag}:counts", f"tchap_guard:{tag}:changes"]

    async def share(
        self, account: AccountCounts
    ) -> tuple[int, Mapping[str, str]] | None:
        fields = list(encode_account(account))
        args = [self._ttl]
        for field, value in fields:
            args += (field, value)
        reply = await self._run(_SEED, self.keys(account.user_id), args)
        whole = _pairs(reply)
        return int(whole.get("v", "0")), whole

    async def record(
        self, user_id: str, seen: int, changes: Sequence[Change], conditional: bool
    ) -> Recorded | Behind | Missing:
        args = [
            str(seen),
            "1" if conditional else "0",
            self._ttl,
            str(CHANGES_KEPT),
            "\n".join(_change_line(key, entry) for key, _, entry in changes),
        ]
        for key, layout, entry in changes:
            for op in operations(key, layout, entry):
                args += op
        reply = await self._run(_RECORD, self.keys(user_id), args)
        status = int(reply[0])
        if status < 0:
            return Missing()
        version, missed = int(reply[1]), _missed(reply[2])
        return Recorded(version, missed) if status == 1 else Behind(version, missed)


# --- the shapes of things in Redis ---------------------------------------------------


def _prefix(control: str, session: str) -> str:
    return f"{control}|{quote(session, safe='')}|"


def _change_line(key: StateKey, entry: Entry) -> str:
    return _prefix(key.control, key.session) + entry.encode()


def operations(
    key: StateKey, layout: Layout, entry: Entry
) -> list[tuple[str, str, str]]:
    """The hash operations that count `entry` in Redis."""
    prefix = _prefix(key.control, key.session)
    ops = []
    for span, start, served, sent, attempts, refusals in layout.buckets(entry):
        slot = (start // width_of(span)) % SLOTS
        if served or sent:
            ops.append(("a", f"{prefix}w{span}:{slot}", f"{start},{served},{sent}"))
        if attempts or refusals:
            ops.append(
                ("a", f"{prefix}T{span}:{slot}", f"{start},{attempts},{refusals}")
            )
    target = entry.target
    if target is not None:
        if layout.shape.distinct and entry.served > 0:
            ops.append(("m", f"{prefix}s:{target}", str(entry.ts)))
        elif layout.shape.distinct and entry.served < 0:
            ops.append(("u", f"{prefix}s:{target}", str(entry.ts)))
    if entry.cause_until:
        ops.append(("m", f"{prefix}c", str(entry.cause_until)))
        ops.append(("m", f"{prefix}C", str(entry.cause_since)))
        if target is not None and entry.refusals and layout.shape.causes:
            ops.append(("m", f"{prefix}r:{target}", str(entry.ts)))
    return ops


def encode_account(account: AccountCounts) -> Iterable[tuple[str, str]]:
    """An account's counts as hash fields (to seed the shared copy)."""
    for (control, session), state in account.states.items():
        prefix = _prefix(control, session)
        for span, start, served, sent, attempts, refusals in state.buckets():
            slot = (start // width_of(span)) % SLOTS
            if served or sent:
                yield f"{prefix}w{span}:{slot}", f"{start},{served},{sent}"
            if attempts or refusals:
                yield f"{prefix}T{span}:{slot}", f"{start},{attempts},{refusals}"
        for target, ts in (state.served_targets or {}).items():
            yield f"{prefix}s:{target}", str(ts)
        if state.cause_until:
            yield f"{prefix}c", str(state.cause_until)
            yield f"{prefix}C", str(state.cause_since)
        for target, ts in (state.refused or {}).items():
            yield f"{prefix}r:{target}", str(ts)


def decode_account(
    account: AccountCounts,
    whole: Mapping[str, str],
    shape_of: Callable[[str, str], Shape | None],
) -> None:
    """Replace an account's states with the shared copy's (`whole`: its fields)."""
    buckets: dict[tuple[str, str], list[tuple[int, int, int, int, int, int]]] = {}
    served: dict[tuple[str, str], list[tuple[str, int]]] = {}
    causes: dict[tuple[str, str], tuple[int, int]] = {}
    refused: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for field, value in whole.items():
        parts = field.split("|", 2)
        if len(parts) != 3:
            continue  # the version
        control, session, rest = parts[0], unquote(parts[1]), parts[2]
        key = (control, session)
        kind = rest[:1]
        if kind in ("w", "T"):
            span = int(rest[1:].partition(":")[0])
            start, x, y = (int(n) for n in value.split(","))
            bucket = (
                (span, start, x, y, 0, 0) if kind == "w" else (span, start, 0, 0, x, y)
            )
            buckets.setdefault(key, []).append(bucket)
        elif kind == "s":
            served.setdefault(key, []).append((rest[2:], int(value)))
        elif kind == "r":
            refused.setdefault(key, []).append((rest[2:], int(value)))
        elif kind == "C":  # when the cause began
            causes[key] = (int(value), causes.get(key, (0, 0))[1])
        elif kind == "c":  # until when it lasts
            causes[key] = (causes.get(key, (0, 0))[0], int(value))
    account.states = {}
    for key in buckets.keys() | served.keys() | causes.keys() | refused.keys():
        shape = shape_of(*key)
        if shape is None:
            continue  # a control this process does not count (its config differs)
        state = account.state(key[0], key[1], shape)
        state.load(
            _merged(buckets.get(key, [])),
            served.get(key, ()),
            causes.get(key, (0, 0)),
            refused.get(key, ()),
        )


def _merged(
    buckets: list[tuple[int, int, int, int, int, int]],
) -> list[tuple[int, int, int, int, int, int]]:
    """A window's and a tally's buckets of the same span and start, as one."""
    merged: dict[tuple[int, int], list[int]] = {}
    for span, start, served, sent, attempts, refusals in buckets:
        cell = merged.setdefault((span, start), [0, 0, 0, 0])
        cell[0] += served
        cell[1] += sent
        cell[2] += attempts
        cell[3] += refusals
    return [(span, start, a, b, c, d) for (span, start), (a, b, c, d) in merged.items()]


def decode_change(line: str) -> tuple[str, str, Entry]:
    control, session, entry = line.split("|", 2)
    return control, unquote(session), Entry.decode(entry)


def _missed(reply: Any) -> Missed:
    items = [_text(item) for item in reply]
    if not items or items[0] == "+":
        changes = tuple(
            decode_change(line) for change in items[1:] for line in change.split("\n")
        )
        return Missed(changes)
    return Missed(whole=_pairs(items[1:]))


def _pairs(items: Sequence[Any]) -> dict[str, str]:
    texts = [_text(item) for item in items]
    return dict(zip(texts[0::2], texts[1::2], strict=True))


def _text(raw: Any) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
